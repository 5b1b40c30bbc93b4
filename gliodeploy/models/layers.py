"""Small layers and module surgery shared by the architectures (ONNX export, Grad-CAM friendliness)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.errors import ConfigError


class GlobalAvgPool3d(nn.Module):
    """Mean over the three spatial axes of ``[B, C, X, Y, Z]``.

    Replaces ``nn.AdaptiveAvgPool3d(1)``: a plain ReduceMean in ONNX for every input size.
    """

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4), keepdim=not self.flatten)


def halving_kernel(size: Sequence[int]) -> tuple[int, int, int]:
    """Kernel of a 2x pooling that leaves axes already reduced to one voxel untouched.

    Lets the study's architectures (designed for 128x128x82) run on reduced demo grids such as
    32x32x21, where the z axis reaches 1 before the others.
    """
    return tuple(2 if s >= 2 else 1 for s in size)  # type: ignore[return-value]


def pooled_size(size: Sequence[int], kernel: Sequence[int]) -> tuple[int, int, int]:
    """Output size of a pooling with stride = kernel and floor rounding."""
    return tuple(s // k for s, k in zip(size, kernel, strict=True))  # type: ignore[return-value]


def check_feature_size(model_name: str, grid: Sequence[int], size: Sequence[int]) -> None:
    """Raise ConfigError when the input grid is too small for the architecture's downsampling."""
    if min(size) < 1:
        raise ConfigError(
            f"model {model_name!r}: input grid {tuple(grid)} is too small "
            f"(its feature map would be {tuple(size)})"
        )


def make_exportable(module: nn.Module) -> nn.Module:
    """Make a library model ONNX-exportable and explainable, in place.

    - every activation with an ``inplace`` flag gets ``inplace=False`` (an in-place ReLU after an
      explained layer breaks medcam's backward hook);
    - every ``nn.AdaptiveAvgPool3d`` with output size 1 becomes :class:`GlobalAvgPool3d`; other
      adaptive output sizes are refused (they only export when they divide the input size).
    """
    for m in module.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    for parent in list(module.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool3d):
                out = child.output_size
                sizes = out if isinstance(out, tuple) else (out,)
                if any(s != 1 for s in sizes):
                    raise ConfigError(f"adaptive pooling to {out} is not exportable: use a fixed AvgPool3d")
                setattr(parent, child_name, GlobalAvgPool3d())
    return module
