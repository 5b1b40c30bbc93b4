"""3D Grad-CAM of the fold models with medcam (the study's tool).

Every gliodeploy model returns one logit (see docs/ARCHITECTURE.md), so Grad-CAM always explains the
**positive class (recurrence)**: the map shows the regions that push the prediction towards
recurrence, also for a scan predicted TRC. medcam returns the map at input size
(``return_attention=True``), normalised to [0, 1] per volume; the ensemble map is the mean of the
folds' maps, as the ensemble probability is the mean of theirs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gliodeploy.errors import InputError, ModelError


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM maps of one volume: ``maps`` ``[K, X, Y, Z]`` in [0, 1], one per model."""

    maps: np.ndarray
    probabilities: np.ndarray  # [K] P(recurrence) of each model
    layer: str

    @property
    def mean_map(self) -> np.ndarray:
        """The ensemble map (mean of the models' maps), ``[X, Y, Z]``."""
        return self.maps.mean(axis=0)

    @property
    def probability(self) -> float:
        """Ensemble probability (mean of the models')."""
        return float(self.probabilities.mean())


def gradcam(model, volume_xyz: np.ndarray, *, layer: str | None = None) -> tuple[np.ndarray, float]:
    """Grad-CAM map ``[X, Y, Z]`` (float32, [0, 1]) of ``model`` on one brain-masked SUV volume.

    ``layer`` defaults to ``model.gradcam_layer`` (the registry's last convolutional block). The model
    itself is left untouched (medcam patches a deep copy). Returns the map and P(recurrence).
    """
    import torch
    from medcam import medcam

    layer = layer or getattr(model, "gradcam_layer", None)
    if not layer:
        raise ModelError("the model has no gradcam_layer; pass layer= explicitly")
    if layer not in dict(model.named_modules()):
        raise ModelError(f"Grad-CAM layer {layer!r} is not a module of the model")
    volume = np.asarray(volume_xyz, dtype=np.float32)
    if volume.ndim != 3 or not np.isfinite(volume).all():
        raise InputError(f"Grad-CAM needs a finite 3-D volume [x, y, z], got shape {volume.shape}")
    injected = medcam.inject(
        copy.deepcopy(model).eval(), backend="gcam", layer=layer, return_attention=True, save_maps=False
    )
    x = torch.from_numpy(np.ascontiguousarray(volume))[None, None]
    with torch.enable_grad():
        logit, attention = injected(x)
    if attention is None or tuple(attention.shape[-3:]) != volume.shape:
        raise ModelError(f"medcam returned no map at input size for layer {layer!r}")
    cam = attention[0, 0].detach().cpu().numpy().astype(np.float32)
    cam = np.nan_to_num(cam, nan=0.0)  # a constant feature map gives 0/0 in medcam's normalisation
    return cam, float(torch.sigmoid(logit.detach())[0, 0])


def gradcam_models(models: Sequence, volume_xyz: np.ndarray) -> GradCam:
    """Grad-CAM of every model (e.g. the folds of a run) on the same volume."""
    if not models:
        raise ModelError("no models to explain")
    maps, probs = zip(*(gradcam(m, volume_xyz) for m in models), strict=True)
    return GradCam(np.stack(maps), np.array(probs), getattr(models[0], "gradcam_layer", ""))


def attention_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the total attention that falls inside ``mask`` (the brain): a sanity check
    against a model that looks at the skull, the field-of-view border or the background."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    if cam.shape != mask.shape:
        raise InputError(f"map shape {cam.shape} differs from mask shape {mask.shape}")
    total = cam.sum()
    return float(cam[np.asarray(mask) > 0].sum() / total) if total > 0 else 0.0
