"""The fold ensemble as one ``torch.nn.Module`` (what gets exported to ONNX/TorchScript)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gliodeploy.errors import ModelError

#: Probabilities are clamped to [EPS, 1 - EPS] before the logit so it stays finite (float32-safe).
LOGIT_EPS = 1e-6


class EnsembleModule(nn.Module):
    """Average the sigmoid of K fold models in a single graph.

    Input ``suv``: float32 ``[B, 1, X, Y, Z]`` brain-masked SUV on the model grid (each fold model
    normalises it itself). Outputs, in this order (the names of :mod:`gliodeploy.contract`):

    * ``probability`` ``[B, 1]``: mean of the folds' P(recurrence) (each ``sigmoid(logit / T)`` when the
      operating point carries a temperature ``T``);
    * ``fold_probabilities`` ``[B, K]``: each fold's P(recurrence);
    * ``logit`` ``[B, 1]``: logit of the mean probability (clamped to ``[LOGIT_EPS, 1-LOGIT_EPS]``),
      so that ``sigmoid(logit) == probability`` up to the clamp.
    """

    def __init__(self, fold_models: Sequence[nn.Module], temperature: float | None = None) -> None:
        super().__init__()
        if len(fold_models) == 0:
            raise ModelError("cannot build an ensemble from zero fold models")
        if temperature is not None and not temperature > 0:
            raise ModelError(f"temperature must be > 0, got {temperature}")
        self.folds = nn.ModuleList(fold_models)
        # The operating point's temperature (fitted on OOF logits): every fold's logit is divided by
        # it before the sigmoid, so the served probability is on the scale the threshold was chosen on.
        self.temperature = float(temperature) if temperature else None
        # Folds built with the same options have the same parameter-free input stage (normalisation,
        # LesionNet's asymmetry channel and mid-sagittal plane): compute it once, not once per fold.
        # It is most of the graph: 5 copies made the exported file ~14,000 nodes and the export minutes.
        keys = {getattr(m, "prepare_key", None) for m in fold_models}
        self.shared_prepare = len(keys) == 1 and None not in keys
        self.eval()

    @property
    def num_folds(self) -> int:
        """Number of fold models K."""
        return len(self.folds)

    def forward(self, suv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Each fold returns one logit [B, 1]; concatenating gives [B, K].
        t = self.temperature
        if self.shared_prepare:
            h = self.folds[0].prepare(suv)
            logits = [m.from_prepared(h) for m in self.folds]
        else:
            logits = [m(suv) for m in self.folds]
        fold_prob = torch.cat([torch.sigmoid(z / t if t else z) for z in logits], dim=1)
        prob = fold_prob.mean(dim=1, keepdim=True)
        p = prob.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        logit = torch.log(p) - torch.log1p(-p)
        return prob, fold_prob, logit
