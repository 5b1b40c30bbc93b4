"""K CNN3D folds folded into one network: grouped convolutions instead of K separate graphs.

Fold k's filters become channel group k of one wider conv (the first conv shares its single input
channel, later convs use ``groups=K``); the two FC layers become batched matrix products. Same
outputs as :class:`gliodeploy.export.ensemble.EnsembleModule`, in one graph with 4 convs instead of
4K, so the runtime sees fewer, larger kernels. A benchmark idea, not a deployed format.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.export.ensemble import LOGIT_EPS


class FoldedCNN3D(nn.Module):
    """The fold ensemble of K ``cnn3d`` GliomaNets as one grouped network (eval only)."""

    def __init__(self, folds: Sequence[nn.Module]) -> None:
        super().__init__()
        k = len(folds)
        self.k = k
        self.normalization = folds[0].normalization  # identical in every fold (same preprocessing)
        backbones = [f.backbone for f in folds]
        blocks = []
        for i, block in enumerate(backbones[0].features):
            conv0: nn.Conv3d = block[0]
            c_in = conv0.in_channels * (1 if i == 0 else k)
            conv = nn.Conv3d(c_in, conv0.out_channels * k, 3, padding=1, groups=1 if i == 0 else k)
            with torch.no_grad():
                conv.weight.copy_(torch.cat([b.features[i][0].weight for b in backbones]))
                conv.bias.copy_(torch.cat([b.features[i][0].bias for b in backbones]))
            blocks += [conv, nn.InstanceNorm3d(conv.out_channels, affine=False), nn.ReLU(), nn.MaxPool3d(2)]
        self.features = nn.Sequential(*blocks)
        self.pool = backbones[0].pool
        fc1 = [b.classifier[1] for b in backbones]
        fc2 = [b.classifier[4] for b in backbones]
        self.w1 = nn.Parameter(torch.stack([f.weight for f in fc1]).detach())  # [K, F, D]
        self.b1 = nn.Parameter(torch.stack([f.bias for f in fc1]).detach())  # [K, F]
        self.w2 = nn.Parameter(torch.stack([f.weight[0] for f in fc2]).detach())  # [K, F]
        self.b2 = nn.Parameter(torch.cat([f.bias for f in fc2]).detach())  # [K]
        self.eval()

    def forward(self, suv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.pool(self.features(self.normalization(suv)))
        z = z.reshape(z.shape[0], self.k, -1)  # channel groups are folds: [B, K, D]
        h = torch.relu(torch.einsum("bkd,kfd->bkf", z, self.w1) + self.b1)
        logits = (h * self.w2).sum(-1) + self.b2  # [B, K]
        fold_prob = torch.sigmoid(logits)
        prob = fold_prob.mean(dim=1, keepdim=True)
        p = prob.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        return prob, fold_prob, torch.log(p) - torch.log1p(-p)
