"""Error types shared by every part of gliodeploy.

Every error a user can cause (bad file, missing SUV field, server down...) is a
:class:`GliodeployError`. The command-line entry points catch it, print its message
without a traceback and exit with its ``exit_code``.
"""

from __future__ import annotations


class GliodeployError(Exception):
    """Base class of all user-facing errors. ``exit_code`` is the CLI exit status."""

    exit_code: int = 2


class InputError(GliodeployError):
    """An input file or argument is unusable (missing, unreadable, wrong shape, NaN...)."""

    exit_code = 2


class SuvError(InputError):
    """SUV cannot be computed: a required field is missing, empty, zero or inconsistent."""

    exit_code = 3


class ConfigError(GliodeployError):
    """An experiment, preprocessing or export configuration is invalid."""

    exit_code = 2


class ModelError(GliodeployError):
    """A trained run, checkpoint or model repository is missing, corrupt or inconsistent."""

    exit_code = 4


class ServerError(GliodeployError):
    """The inference server cannot be reached, is not ready, or answered with an error."""

    exit_code = 5
