"""Start and stop the Triton Inference Server bundled with nvidia-pytriton (``gliodeploy serve``)."""

from __future__ import annotations

from gliodeploy.serving.server import ServerStopRequested, TritonServer, find_tritonserver

__all__ = ["ServerStopRequested", "TritonServer", "find_tritonserver"]
