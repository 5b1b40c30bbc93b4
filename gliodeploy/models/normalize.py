"""In-graph intensity normalisation: the first layer of every gliodeploy model.

Putting the normalisation inside the network means training, the exported ONNX graph and Triton
all apply the very same formulas; clients only send brain-masked SUV. The numpy twin is
:func:`gliodeploy.preprocessing.intensity.normalize` (parity-tested); formulas are documented on
:class:`gliodeploy.preprocessing.PreprocessConfig`.

ONNX constraints shape the code: no boolean indexing (data-dependent shapes), so the brain is a
``(x > 0)`` float weight and statistics are weighted sums / ``amin`` / ``amax`` over the spatial
dims, per sample.
"""

from __future__ import annotations

import torch
from torch import nn

from gliodeploy.preprocessing.config import PreprocessConfig

_SPATIAL = (1, 2, 3, 4)


class IntensityNormalization(nn.Module):
    """Normalise a batch ``[B, 1, X, Y, Z]`` of masked SUV volumes, each with its own statistics.

    Has no parameters or buffers (checkpoints of models built with it stay plain); its settings come
    from ``cfg`` and are shown by :meth:`extra_repr`.
    """

    def __init__(self, cfg: PreprocessConfig) -> None:
        super().__init__()
        self.mode = cfg.normalization
        self.eps = float(cfg.eps)
        self.suv_max = float(cfg.suv_max)
        self.tbr_scale = float(cfg.tbr_scale)
        self.robust = cfg.tbr_reference == "robust"
        self.robust_factor = float(cfg.tbr_robust_factor)

    def extra_repr(self) -> str:
        if self.mode == "suv_clip":
            return f"mode=suv_clip, suv_max={self.suv_max:g}"
        if self.mode == "tbr":
            ref = f"robust(factor={self.robust_factor:g})" if self.robust else "mean"
            return f"mode=tbr, reference={ref}, scale={self.tbr_scale:g}"
        return f"mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised batch, same shape and dtype as ``x`` (``[B, C, X, Y, Z]``)."""
        if x.dim() != 5:
            raise ValueError(f"IntensityNormalization expects [B, 1, X, Y, Z], got shape {tuple(x.shape)}")
        if self.mode == "minmax":
            lo = torch.amin(x, dim=_SPATIAL, keepdim=True)
            hi = torch.amax(x, dim=_SPATIAL, keepdim=True)
            return (x - lo) / torch.clamp(hi - lo, min=self.eps)
        if self.mode == "suv_clip":
            return torch.clamp(x, 0.0, self.suv_max) / self.suv_max
        return x / (self.reference(x) * self.tbr_scale)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Healthy-brain reference uptake per sample, ``[B, 1, 1, 1, 1]`` (``tbr`` mode)."""
        weight = (x > 0).to(x.dtype)
        ref = _weighted_mean(x, weight)
        if self.robust:
            weight = weight * (x <= self.robust_factor * ref).to(x.dtype)
            ref = _weighted_mean(x, weight)
        return torch.clamp(ref, min=self.eps)


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    total = torch.sum(x * weight, dim=_SPATIAL, keepdim=True)
    count = torch.clamp(torch.sum(weight, dim=_SPATIAL, keepdim=True), min=1.0)
    return total / count
