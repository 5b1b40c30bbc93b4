"""The wrapper every registry model is: intensity normalisation -> backbone -> one logit ``[B, 1]``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gliodeploy.errors import InputError

#: Backbone output kinds: one logit, or two class scores (z0 = TRC, z1 = recurrence).
HEAD_KINDS = ("logit", "two_class")


class GliomaNet(nn.Module):
    """``normalization -> backbone -> head`` returning one logit per volume, ``[B, 1]``.

    P(recurrence) = sigmoid(logit). A ``"two_class"`` backbone (SENet, SqueezeNet, as in the study)
    returns ``[B, 2]`` scores ``z``; the logit is ``z1 - z0``, so ``sigmoid(logit) = softmax(z)[:, 1]``
    exactly and the 2-class model is trained and served like the others.

    Attributes:
        normalization: the in-graph intensity normalisation (first layer).
        backbone: the architecture proper.
        head_kind: ``"logit"`` or ``"two_class"``.
        grid: the input grid ``(X, Y, Z)`` the model was built for (checked in ``forward``).
        gradcam_layer: dotted name (in ``named_modules()`` of this model) of the last convolutional
            block, the layer medcam explains.
        spec: how the registry built it (name, width, ...), JSON-ready, for plans and model cards.
    """

    def __init__(
        self,
        normalization: nn.Module,
        backbone: nn.Module,
        head_kind: str,
        *,
        grid: tuple[int, int, int],
        gradcam_layer: str,
        spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head_kind not in HEAD_KINDS:
            raise ValueError(f"head_kind must be one of {HEAD_KINDS}, got {head_kind!r}")
        self.normalization = normalization
        self.backbone = backbone
        self.head_kind = head_kind
        self.grid = tuple(int(s) for s in grid)
        self.gradcam_layer = f"backbone.{gradcam_layer}"
        self.spec = dict(spec or {})
        names = dict(self.named_modules())
        if self.gradcam_layer not in names:
            raise ValueError(f"gradcam layer {self.gradcam_layer!r} is not a module of the model")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1]`` for brain-masked SUV volumes ``[B, 1, X, Y, Z]`` on the model grid."""
        return self.from_prepared(self.prepare(x))

    @property
    def prepare_key(self) -> str | None:
        """Describes :meth:`prepare`'s computation: two models with the same key compute the same thing
        there (it has no parameters), so an ensemble may compute it once for all of them. None for a
        backbone without a stage of its own: its normalisation alone is too cheap to be worth changing
        the exported graph of the study's models."""
        if not hasattr(self.backbone, "prepare"):
            return None
        return f"{self.normalization!r}|{self.backbone.asymmetry!r}|{self.grid}"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free input stage: the normalisation, and the backbone's own (``prepare``) if it
        has one (LesionNet's asymmetry channel). Checks the input shape first."""
        self._check(x)
        h = self.normalization(x)
        return self.backbone.prepare(h) if hasattr(self.backbone, "prepare") else h

    def from_prepared(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1]`` from the output of :meth:`prepare`."""
        z = (
            self.backbone.forward_prepared(h)
            if hasattr(self.backbone, "forward_prepared")
            else self.backbone(h)
        )
        if self.head_kind == "two_class":
            return z[:, 1:2] - z[:, 0:1]
        return z

    def _check(self, x: torch.Tensor) -> None:
        # Skipped under jit.trace, where sizes are traced values (the traced graph is fixed anyway).
        bad = x.dim() != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != self.grid
        if not torch.jit.is_tracing() and bad:
            raise InputError(
                f"model input must be [B, 1, {', '.join(map(str, self.grid))}] (SUV on the model grid), "
                f"got shape {list(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"head_kind={self.head_kind!r}, grid={self.grid}, gradcam_layer={self.gradcam_layer!r}"
