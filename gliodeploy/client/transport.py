"""One thin layer over tritonclient's HTTP and gRPC clients with the same methods for both, and one
place that turns their exceptions into :mod:`gliodeploy.client.errors` classes.

tritonclient is imported lazily: ``gliodeploy-client --help`` must not pay for gevent/grpc.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliodeploy.client.errors import (
    InvalidResponseError,
    ModelNotReadyError,
    ModelVersionError,
    ServerTimeoutError,
    ServerUnavailableError,
    TransientServerError,
)
from gliodeploy.errors import InputError, ServerError

PROTOCOLS = ("http", "grpc")
#: Request compression choices (``--compression``). A brain-masked model-grid volume is mostly zeros:
#: gzip shrinks it ~6x, which pays on a slow link and costs CPU (tens of ms per 5 MB) on a fast one.
COMPRESSIONS = ("none", "gzip", "deflate")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}

#: gRPC message limit we ask for, both directions. tritonclient 2.73's grpc client already sets
#: ``grpc.max_{send,receive}_message_length`` to INT32_MAX when ``channel_args`` is None, but any
#: caller passing ``channel_args`` (e.g. for keepalive) replaces the whole list and falls back to
#: gRPC's 4 MiB default, below one 5.4 MB volume. We always pass the list explicitly.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1

log = logging.getLogger(__name__)

_HTTP_TRANSIENT = {"502", "503", "504"}
_GRPC_TRANSIENT = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"}


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the server."""

    url: str  # host:port, no scheme
    protocol: str = "http"
    timeout: float = 60.0
    ssl: bool = False
    ca_file: str | None = None
    headers: Mapping[str, str] | None = None
    #: inference request body compression: None, "gzip" or "deflate" (HTTP Content-Encoding, gRPC
    #: message compression). Responses (three small tensors) are never compressed: nothing to gain.
    compression: str | None = None


def parse_url(url: str, protocol: str) -> tuple[str, bool]:
    """Return ``(host:port, ssl_from_scheme)``; add the protocol's default port when none is given."""
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    ssl = False
    rest = url.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() not in ("http", "https", "grpc", "grpcs"):
            raise InputError(f"--url {url!r}: unsupported scheme {scheme!r} (use http(s):// or host:port)")
        ssl = scheme.lower() in ("https", "grpcs")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise InputError(f"--url {url!r}: expected host[:port] (a path is not supported)")
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest = f"{rest}:{DEFAULT_PORTS[protocol]}"
    return rest, ssl


def classify(exc: BaseException, *, what: str, model: str | None = None, version: str = "") -> ServerError:
    """Map a tritonclient / socket exception to the matching :class:`ServerError` subclass."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout":  # gevent.Timeout
        return ServerTimeoutError(f"{what}: the server did not answer in time ({exc or 'timeout'})")
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return TransientServerError(f"{what}: connection lost ({exc})")
    if isinstance(exc, (ConnectionRefusedError, OSError)) and not isinstance(exc, InferenceServerException):
        return ServerUnavailableError(f"{what}: cannot connect to the server ({exc}); is it running?")
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        msg = exc.message() or str(exc)
        low = msg.lower()
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return ServerTimeoutError(f"{what}: the server did not answer in time ({msg})")
        if status in _HTTP_TRANSIENT or status in _GRPC_TRANSIENT:
            if "failed to connect" in low or "connection refused" in low:
                return ServerUnavailableError(f"{what}: cannot connect to the server ({msg}); is it running?")
            return TransientServerError(f"{what}: server temporarily unavailable ({status}: {msg})")
        if model and ("unknown model" in low or "not found" in low or "not ready" in low):
            if version and "version" in low:
                return ModelVersionError(f"{what}: model {model!r} has no ready version {version!r} ({msg})")
            return ModelNotReadyError(f"{what}: model {model!r} is not available on the server ({msg})")
        return ServerError(f"{what}: the server answered with an error ({status}: {msg})")
    return InvalidResponseError(
        f"{what}: unexpected failure talking to the server ({type(exc).__name__}: {exc})"
    )


class Transport:
    """A connection to one Triton server over HTTP or gRPC (not thread-safe: one per thread)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._headers = dict(endpoint.headers or {})
        try:
            if endpoint.protocol == "http":
                import tritonclient.http as tc

                ssl_options = {"ca_certs": endpoint.ca_file} if endpoint.ca_file else None
                self._tc = tc
                self._client = tc.InferenceServerClient(
                    endpoint.url,
                    connection_timeout=endpoint.timeout,
                    network_timeout=endpoint.timeout,
                    ssl=endpoint.ssl,
                    ssl_options=ssl_options,
                )
            else:
                import tritonclient.grpc as tc

                self._tc = tc
                self._client = tc.InferenceServerClient(
                    endpoint.url,
                    ssl=endpoint.ssl,
                    root_certificates=endpoint.ca_file,
                    channel_args=[
                        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
                        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                    ],
                )
        except Exception as exc:  # bad URL, unreadable CA file...
            raise ServerUnavailableError(
                f"cannot create a {endpoint.protocol} client for {endpoint.url}: {exc}"
            ) from exc

    def _kw(self) -> dict[str, Any]:
        # A copy per call: tritonclient's HTTP infer adds Content-Encoding to the dict it is given.
        headers = dict(self._headers) or None
        if self.endpoint.protocol == "grpc":
            return {"headers": headers, "client_timeout": self.endpoint.timeout}
        return {"headers": headers}

    def _call(
        self, what: str, fn: Any, *args: Any, model: str | None = None, version: str = "", **kw: Any
    ) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kw, **self._kw())
        except Exception as exc:
            error = classify(exc, what=what, model=model, version=version)
            log.debug("%s %s failed after %.3f s: %s", self._where(), what, time.perf_counter() - t0, error)
            raise error from exc
        log.debug("%s %s took %.3f s", self._where(), what, time.perf_counter() - t0)
        return out

    def _where(self) -> str:
        return f"{self.endpoint.protocol}://{self.endpoint.url}"

    def close(self) -> None:
        """Release the connection."""
        with contextlib.suppress(Exception):  # closing a broken connection must not mask the real error
            self._client.close()

    def is_live(self) -> bool:
        """Server liveness (``/v2/health/live``)."""
        return bool(self._call("health", self._client.is_server_live))

    def is_ready(self) -> bool:
        """Server readiness (``/v2/health/ready``)."""
        return bool(self._call("health", self._client.is_server_ready))

    def is_model_ready(self, model: str, version: str = "") -> bool:
        """Model readiness."""
        return bool(
            self._call(
                "model ready", self._client.is_model_ready, model, version, model=model, version=version
            )
        )

    def server_metadata(self) -> dict[str, Any]:
        """Server name, version and extensions as a dict."""
        return self._as_dict(
            self._call("server metadata", self._client.get_server_metadata, **self._json_kw())
        )

    def model_metadata(self, model: str, version: str = "") -> dict[str, Any]:
        """KServe v2 model metadata (name, versions, inputs, outputs) as a dict."""
        out = self._call(
            "model metadata",
            self._client.get_model_metadata,
            model,
            version,
            model=model,
            version=version,
            **self._json_kw(),
        )
        return self._as_dict(out)

    def model_config(self, model: str, version: str = "") -> dict[str, Any]:
        """Triton model configuration as a dict (gRPC's is wrapped in ``{"config": ...}``; unwrapped here)."""
        out = self._as_dict(
            self._call(
                "model config",
                self._client.get_model_config,
                model,
                version,
                model=model,
                version=version,
                **self._json_kw(),
            )
        )
        return out.get("config", out) if self.endpoint.protocol == "grpc" else out

    def _json_kw(self) -> dict[str, Any]:
        return {"as_json": True} if self.endpoint.protocol == "grpc" else {}

    @staticmethod
    def _as_dict(obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        if isinstance(obj, (str, bytes)):
            return json.loads(obj)
        raise InvalidResponseError(f"expected a JSON object from the server, got {type(obj).__name__}")

    def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        *,
        datatypes: Mapping[str, str],
    ) -> dict[str, np.ndarray]:
        """Run one inference with binary tensors; return the requested outputs as numpy arrays."""
        tc = self._tc
        infer_inputs = []
        for name, arr in inputs.items():
            item = tc.InferInput(name, list(arr.shape), datatypes[name])
            if self.endpoint.protocol == "http":
                item.set_data_from_numpy(arr, binary_data=True)
            else:
                item.set_data_from_numpy(arr)
            infer_inputs.append(item)
        if self.endpoint.protocol == "http":
            requested = [tc.InferRequestedOutput(o, binary_data=True) for o in outputs]
            compression = {"request_compression_algorithm": self.endpoint.compression}
        else:
            requested = [tc.InferRequestedOutput(o) for o in outputs]
            compression = {"compression_algorithm": self.endpoint.compression}
        result = self._call(
            "inference",
            self._client.infer,
            model,
            infer_inputs,
            model_version=version,
            outputs=requested,
            model=model,
            version=version,
            **compression,
        )
        arrays: dict[str, np.ndarray] = {}
        for o in outputs:
            try:
                value = result.as_numpy(o)
            except Exception as exc:
                raise InvalidResponseError(
                    f"inference: cannot decode output {o!r} of {model!r}: {exc}"
                ) from exc
            if value is None:
                raise InvalidResponseError(f"inference: model {model!r} returned no output {o!r}")
            arrays[o] = value
        return arrays
