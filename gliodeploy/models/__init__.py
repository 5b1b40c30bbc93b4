"""Model registry: the study's six 3D CNN architectures and ``lesionnet``, each returning a logit ``[B, 1]``.

``build_model(name, preprocessing=cfg)`` is the entry point. Attributes are resolved lazily so that
importing a light submodule (e.g. ``gliodeploy.models.normalize``) does not import MONAI/timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MODEL_NAMES", "STUDY_MODEL_NAMES", "GliomaNet", "build_model", "count_parameters", "model_info"]

_LAZY = {
    "MODEL_NAMES": "gliodeploy.models.registry",
    "STUDY_MODEL_NAMES": "gliodeploy.models.registry",
    "build_model": "gliodeploy.models.registry",
    "count_parameters": "gliodeploy.models.registry",
    "model_info": "gliodeploy.models.registry",
    "GliomaNet": "gliodeploy.models.gliomanet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
