"""VGG11-3D with batch normalisation (27,658,497 parameters at full width)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.models.layers import GlobalAvgPool3d, check_feature_size, halving_kernel, pooled_size

#: VGG "A" configuration (numbers: 3^3 conv filters, "M": 2x max pooling).
VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG3D(nn.Module):
    """VGG11 in 3D: Conv-BN-ReLU stacks, five max poolings, global average pooling, Linear(C, 1).

    ``width`` scales every filter count (the study's reduced variants). Max poolings keep axes that
    already reached one voxel, so reduced grids (e.g. 32x32x21) work.
    """

    def __init__(self, grid: Sequence[int], width: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, tuple(grid)
        for item in VGG11_CFG:
            if item == "M":
                kernel = halving_kernel(size)
                layers.append(nn.MaxPool3d(kernel))
                size = pooled_size(size, kernel)
            else:
                c_out = max(1, round(int(item) * width))
                layers += [
                    nn.Conv3d(c_in, c_out, kernel_size=3, padding=1),
                    nn.BatchNorm3d(c_out),
                    nn.ReLU(inplace=False),
                ]
                c_in = c_out
        check_feature_size("vgg11", grid, size)
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgPool3d(flatten=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(self.features(x))))


#: The last ReLU (before the last pooling) of the last conv block.
GRADCAM_LAYER = f"features.{sum(3 if i != 'M' else 1 for i in VGG11_CFG) - 2}"
