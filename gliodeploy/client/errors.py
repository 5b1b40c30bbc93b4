"""Server-side failures the client can meet, one class (and one exit code) per cause.

Exit codes of ``gliodeploy-client``: 0 all scans predicted, 1 some scans failed, 2 bad usage or
bad input, 3 SUV cannot be computed, 5 server unreachable, 6 timeout, 7 model not found / not
ready, 8 wrong model version, 9 invalid response from the server.
"""

from __future__ import annotations

from gliodeploy.errors import ServerError

#: Exit code when at least one scan of a batch failed while the others were predicted.
EXIT_SOME_FAILED = 1


class ServerUnavailableError(ServerError):
    """Connection refused, reset, or the server reports it is not live/ready."""

    exit_code = 5


class ServerTimeoutError(ServerError):
    """The server did not answer within the client's timeout."""

    exit_code = 6


class ModelNotReadyError(ServerError):
    """The model is unknown to the server or not loaded (yet)."""

    exit_code = 7


class ModelVersionError(ServerError):
    """The requested model version does not exist or is not ready."""

    exit_code = 8


class InvalidResponseError(ServerError):
    """The server answered, but not with what a gliodeploy model must return."""

    exit_code = 9


class TransientServerError(ServerUnavailableError):
    """A failure worth retrying (HTTP 502/503/504, gRPC UNAVAILABLE, connection reset)."""
