"""Shared preprocessing (numpy + SimpleITK only, no torch): native SUV scan -> model grid and back.

Used by training (cache), export checks, the server-side geometry model and the light client.
Attributes are resolved lazily: importing :mod:`gliodeploy.preprocessing.config` (needed by every
model) must not import SimpleITK, so that the models build where only torch is installed (GPU check).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from gliodeploy.preprocessing.config import ORIENTATION, PRESETS, PreprocessConfig
    from gliodeploy.preprocessing.geometry import to_grid_image, to_native
    from gliodeploy.preprocessing.intensity import normalize
    from gliodeploy.preprocessing.pipeline import Preprocessed, preprocess

__all__ = [
    "ORIENTATION",
    "PRESETS",
    "PreprocessConfig",
    "Preprocessed",
    "normalize",
    "preprocess",
    "to_grid_image",
    "to_native",
]

_LAZY = {
    "ORIENTATION": "gliodeploy.preprocessing.config",
    "PRESETS": "gliodeploy.preprocessing.config",
    "PreprocessConfig": "gliodeploy.preprocessing.config",
    "to_grid_image": "gliodeploy.preprocessing.geometry",
    "to_native": "gliodeploy.preprocessing.geometry",
    "normalize": "gliodeploy.preprocessing.intensity",
    "Preprocessed": "gliodeploy.preprocessing.pipeline",
    "preprocess": "gliodeploy.preprocessing.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
