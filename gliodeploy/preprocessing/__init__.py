"""Shared preprocessing (numpy + SimpleITK only, no torch): native SUV scan -> model grid and back.

Used by training (cache), export checks, the server-side geometry model and the light client.
"""

from __future__ import annotations

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
