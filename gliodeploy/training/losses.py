"""Losses for a single recurrence logit ``z`` (P(recurrence) = sigmoid(z)).

Both return per-sample losses (``reduction="none"``) or their mean, and accept a ``pos_weight``
that scales the positive samples' loss (class weighting, as ``BCEWithLogitsLoss(pos_weight=...)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"unknown reduction {reduction!r}")


def _flat(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.reshape(-1).float()
    y = targets.reshape(-1).to(z.dtype)
    if z.shape != y.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in size")
    return z, y


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, optionally with ``pos_weight`` for the positive class."""

    def __init__(self, pos_weight: float | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, y = _flat(logits, targets)
        pw = (
            None if self.pos_weight is None else torch.tensor(self.pos_weight, dtype=z.dtype, device=z.device)
        )
        loss = F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")
        return _reduce(loss, self.reduction)


class SymmetricCrossEntropy(nn.Module):
    """Symmetric cross-entropy (Wang et al., ICCV 2019) for noisy labels, on one logit.

    ``SCE = alpha * CE + beta * RCE`` with ``CE = -sum_k q_k log p_k`` and the reverse term
    ``RCE = -sum_k p_k log q_k`` over the two classes, ``p = (1 - sigmoid(z), sigmoid(z))`` and
    ``q`` the one-hot label. ``log 0`` is replaced by ``A`` (default -4, as in the paper), so
    ``RCE = -A * |y - sigmoid(z)|``: bounded, hence robust to mislabelled patients.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_clamp: float = -4.0,
        pos_weight: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if log_clamp >= 0:
            raise ValueError("log_clamp (A) must be negative")
        self.alpha, self.beta, self.log_clamp = alpha, beta, log_clamp
        self.pos_weight = pos_weight
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, y = _flat(logits, targets)
        ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        p = torch.sigmoid(z)
        # -sum_k p_k log q_k: only the wrong class has q_k = 0, whose log is replaced by A.
        rce = -self.log_clamp * (y * (1 - p) + (1 - y) * p)
        loss = self.alpha * ce + self.beta * rce
        if self.pos_weight is not None:
            loss = loss * torch.where(y > 0.5, torch.full_like(y, self.pos_weight), torch.ones_like(y))
        return _reduce(loss, self.reduction)


def build_loss(
    name: str,
    *,
    pos_weight: float | None = None,
    sce_alpha: float = 0.1,
    sce_beta: float = 1.0,
    sce_log_clamp: float = -4.0,
    reduction: str = "mean",
) -> nn.Module:
    """The loss named ``bce`` or ``sce``."""
    if name == "bce":
        return BCELoss(pos_weight, reduction)
    if name == "sce":
        return SymmetricCrossEntropy(sce_alpha, sce_beta, sce_log_clamp, pos_weight, reduction)
    raise ValueError(f"unknown loss {name!r}")
