"""Intensity normalisation in numpy: the twin of the in-graph ``IntensityNormalization`` layer.

Models normalise their input themselves (first layer), so datasets and clients feed masked SUV.
This numpy version exists for checks (parity tests, QC images) and must stay formula-for-formula
identical to :mod:`gliodeploy.models.normalize`. Brain voxels are ``x > 0`` (the array is masked
SUV with zeros outside the brain), exactly as the graph sees them.
"""

from __future__ import annotations

import numpy as np

from gliodeploy.errors import InputError
from gliodeploy.preprocessing.config import PreprocessConfig


def normalize(array: np.ndarray, cfg: PreprocessConfig, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise one masked SUV volume (any shape) as ``cfg.normalization`` says; returns float32.

    ``mask`` (same shape, nonzero = brain) replaces the default brain definition ``array > 0`` for
    the ``tbr`` reference; leave it out to match the network exactly.
    """
    x = np.asarray(array)
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"normalize expects a numeric array, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError("normalize: the array contains NaN or Inf values")
    if x.size == 0:
        raise InputError("normalize: the array is empty")
    if mask is not None and np.shape(mask) != x.shape:
        raise InputError(f"normalize: mask shape {np.shape(mask)} differs from array shape {x.shape}")
    eps = cfg.eps
    if cfg.normalization == "minmax":
        lo, hi = x.min(), x.max()
        out = (x - lo) / max(hi - lo, eps)
    elif cfg.normalization == "suv_clip":
        out = np.clip(x, 0.0, cfg.suv_max) / cfg.suv_max
    else:  # "tbr"
        brain = (x > 0) if mask is None else (np.asarray(mask) != 0)
        out = x / (tbr_reference(x, brain, cfg) * cfg.tbr_scale)
    return out.astype(np.float32)


def tbr_reference(x: np.ndarray, brain: np.ndarray, cfg: PreprocessConfig) -> float:
    """Healthy-brain reference uptake: mean SUV of ``brain`` voxels, optionally without hot voxels.

    With ``cfg.tbr_reference == "robust"`` a second pass drops voxels above
    ``cfg.tbr_robust_factor`` x the first mean (tumour, striatum). Never below ``cfg.eps``.
    """
    w = brain.astype(np.float64)
    ref = (x * w).sum() / max(w.sum(), 1.0)
    if cfg.tbr_reference == "robust":
        w = w * (x <= cfg.tbr_robust_factor * ref)
        ref = (x * w).sum() / max(w.sum(), 1.0)
    return max(float(ref), cfg.eps)
