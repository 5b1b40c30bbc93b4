"""Client side: read a PET scan, convert to SUV, preprocess, query Triton. Never imports torch.

``from gliodeploy.client import GliodeployClient``; the names are loaded on first use so that
``gliodeploy-client --help`` does not import SimpleITK or tritonclient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gliodeploy.client.api import GliodeployClient, ModelInfo, Prediction, ScanFailure

__all__ = ["GliodeployClient", "ModelInfo", "Prediction", "ScanFailure"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gliodeploy.client import api

        return getattr(api, name)
    raise AttributeError(f"module 'gliodeploy.client' has no attribute {name!r}")
