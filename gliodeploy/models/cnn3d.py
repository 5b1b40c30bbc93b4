"""CNN3D: the study's plain 4-block 3D CNN (5,414,081 parameters at full width on 128x128x82)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.models.layers import check_feature_size, halving_kernel, pooled_size

#: Convolution filters at full width; "half"/"quarter" scale them (and the first FC) by 1/2, 1/4.
FULL_FILTERS = (64, 64, 128, 256)
FULL_FC = 512


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3d 3^3 (same padding) -> InstanceNorm3d (no affine) -> ReLU -> MaxPool3d 2."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, padding=1),
        nn.InstanceNorm3d(c_out, affine=False),
        nn.ReLU(inplace=False),  # not in place: Grad-CAM hooks this block
        nn.MaxPool3d(2),
    )


class CNN3D(nn.Module):
    """Four conv blocks, a fixed 2x average pooling, then FC -> ReLU -> Dropout -> FC(1).

    On the study grid the features are 256 x 8x8x5, average-pooled to 256 x 4x4x2 = 8192 inputs of
    the first FC. The FC input follows the grid; pooling kernels shrink to 1 on axes already
    reduced to one voxel (reduced grids such as 32x32x21). A fixed ``AvgPool3d`` is used instead of
    adaptive pooling, which does not export to ONNX for non-dividing sizes.
    """

    def __init__(
        self,
        grid: Sequence[int],
        filters: Sequence[int] = FULL_FILTERS,
        fc_width: int = FULL_FC,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        blocks, c_in, size = [], 1, tuple(grid)
        for c_out in filters:
            blocks.append(conv_block(c_in, c_out))
            c_in, size = c_out, pooled_size(size, (2, 2, 2))
        check_feature_size("cnn3d", grid, size)
        self.features = nn.Sequential(*blocks)
        kernel = halving_kernel(size)
        self.pool = nn.AvgPool3d(kernel)
        size = pooled_size(size, kernel)
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(c_in * size[0] * size[1] * size[2], fc_width),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(fc_width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


GRADCAM_LAYER = f"features.{len(FULL_FILTERS) - 1}"
