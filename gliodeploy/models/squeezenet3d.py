"""SqueezeNet-3D, v1.0 layout (conv1 7^3 with 96 filters, Fire modules, no BatchNorm, 2 outputs).

1,861,186 parameters with one input channel and the study's 2-class head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.models.layers import GlobalAvgPool3d, check_feature_size


class Fire(nn.Module):
    """Squeeze 1^3 conv, then concatenated 1^3 and 3^3 expand convs (ReLUs not in place)."""

    def __init__(self, c_in: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv3d(c_in, squeeze, kernel_size=1)
        self.squeeze_act = nn.ReLU(inplace=False)
        self.expand1x1 = nn.Conv3d(squeeze, expand1x1, kernel_size=1)
        self.expand3x3 = nn.Conv3d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand_act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_act(self.squeeze(x))
        return self.expand_act(torch.cat([self.expand1x1(x), self.expand3x3(x)], dim=1))


def _pool() -> nn.MaxPool3d:
    return nn.MaxPool3d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet3D(nn.Module):
    """SqueezeNet 1.0 in 3D with ``num_classes`` outputs (class scores, not probabilities).

    conv1 is padded (3 voxels; no parameter change) so that the reduced 32x32x21 grid survives the
    three stride-2 poolings.
    """

    def __init__(self, grid: Sequence[int], num_classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 96, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=False),
            _pool(),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64),
            Fire(128, 32, 128, 128),
            _pool(),
            Fire(256, 32, 128, 128),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            _pool(),
            Fire(512, 64, 256, 256),
        )
        check_feature_size("squeezenet", grid, _feature_size(grid))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv3d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=False),
            GlobalAvgPool3d(flatten=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _feature_size(grid: Sequence[int]) -> tuple[int, ...]:
    def pool(s: int) -> int:
        return (s - 2) // 2 + 1 if s >= 2 else 0  # torch's ceil-mode size for kernel 3, stride 2

    size = [(s + 6 - 7) // 2 + 1 for s in grid]
    for _ in range(3):
        size = [pool(s) for s in size]
    return tuple(size)


GRADCAM_LAYER = "features.12"
