"""Offline inference: ``gliodeploy predict`` runs an exported model repository in-process, no server.

``from gliodeploy.predict import OfflinePredictor``; loaded on first use so that ``gliodeploy --help``
imports neither ONNX Runtime nor SimpleITK. Never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gliodeploy.predict.offline import OfflinePredictor

__all__ = ["OfflinePredictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gliodeploy.predict import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'gliodeploy.predict' has no attribute {name!r}")
