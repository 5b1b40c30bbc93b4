"""Summary of a generated cohort: subjects per site/scanner/label and how hard the cohort is.

Hardness is the separability of the ground truth: the ROC AUC of the true TBRmax and of every drawn
shape feature (:data:`gliodeploy.synth.lesion.SHAPE_FEATURES`) against the recorded labels (what a
model trained on this cohort can reach through that feature alone), for all subjects and for the
training site. A shape feature's AUC is reported as ``max(AUC, 1 - AUC)``: its direction is not
known in advance, so 0.5 means useless whichever way it points.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gliodeploy.errors import InputError
from gliodeploy.synth.lesion import SHAPE_FEATURES

_NEEDED = {"site", "scanner", "label", "split", "true_label", "label_flipped", "tbr_max_true"}


@dataclass(frozen=True)
class Separability:
    """Ground-truth AUCs in one group of subjects (``None`` where a class is missing).

    Attributes:
        n: subjects in the group.
        tbr_auc_observed, tbr_auc_true: ROC AUC of ``tbr_max_true`` for the recorded / true labels.
        shape_auc_observed, shape_auc_true: ``max(AUC, 1 - AUC)`` of each shape feature present in
            the manifest, for the recorded / true labels.
    """

    n: int
    tbr_auc_observed: float | None
    tbr_auc_true: float | None
    shape_auc_observed: dict[str, float | None]
    shape_auc_true: dict[str, float | None]

    @property
    def best_shape_feature(self) -> tuple[str, float] | None:
        """The shape feature with the highest AUC on the recorded labels, and that AUC."""
        scored = [(name, auc) for name, auc in self.shape_auc_observed.items() if auc is not None]
        return max(scored, key=lambda item: item[1]) if scored else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (rounded to 4 decimals)."""
        best = self.best_shape_feature
        return {
            "n": self.n,
            "tbr_max_auc_recorded_labels": _round(self.tbr_auc_observed),
            "tbr_max_auc_true_labels": _round(self.tbr_auc_true),
            "best_shape_feature": None
            if best is None
            else {"name": best[0], "auc_recorded_labels": _round(best[1])},
            "shape_feature_auc_recorded_labels": {k: _round(v) for k, v in self.shape_auc_observed.items()},
            "shape_feature_auc_true_labels": {k: _round(v) for k, v in self.shape_auc_true.items()},
        }


@dataclass(frozen=True)
class CohortSummary:
    """Counts per (site, scanner, label) and the cohort's ground-truth separability.

    ``overall`` covers every subject, ``training`` the training site (``split == "train"``).
    ``auc_observed`` / ``auc_true`` are ``overall``'s TBRmax AUCs on recorded / true labels.
    """

    n: int
    counts: dict[tuple[str, str, int], int]
    flipped: int
    overall: Separability
    training: Separability

    @property
    def auc_observed(self) -> float | None:
        """Ground-truth TBRmax AUC on the recorded labels, all subjects."""
        return self.overall.tbr_auc_observed

    @property
    def auc_true(self) -> float | None:
        """Ground-truth TBRmax AUC on the true labels, all subjects."""
        return self.overall.tbr_auc_true

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``cohort_summary.json``)."""
        return {
            "n": self.n,
            "labels_flipped": self.flipped,
            "counts": [
                {"site": site, "scanner": scanner, "label": label, "n": count}
                for (site, scanner, label), count in self.counts.items()
            ],
            "separability": {"all": self.overall.to_dict(), "training_site": self.training.to_dict()},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _either_way(auc: float | None) -> float | None:
    return None if auc is None else max(auc, 1.0 - auc)


def _separability(rows: Sequence[Mapping[str, str]]) -> Separability:
    observed = [int(r["label"]) for r in rows]
    true = [int(r["true_label"]) for r in rows]
    tbr = [float(r["tbr_max_true"]) for r in rows]
    features = [name for name in SHAPE_FEATURES if rows and all(r.get(name, "") != "" for r in rows)]
    values = {name: [float(r[name]) for r in rows] for name in features}
    return Separability(
        n=len(rows),
        tbr_auc_observed=_auc(observed, tbr),
        tbr_auc_true=_auc(true, tbr),
        shape_auc_observed={name: _either_way(_auc(observed, values[name])) for name in features},
        shape_auc_true={name: _either_way(_auc(true, values[name])) for name in features},
    )


def summarize_rows(rows: Sequence[Mapping[str, str]], *, source: str = "manifest") -> CohortSummary:
    """Summarise manifest rows (dicts of strings, as ``csv.DictReader`` gives them).

    Raises:
        InputError: the rows lack the synthetic ground-truth columns.
    """
    missing = _NEEDED - set(rows[0] if rows else {})
    if missing:
        raise InputError(
            f"{source}: not a synthetic cohort manifest, missing column(s) {', '.join(sorted(missing))}"
        )
    counts = Counter((r["site"], r["scanner"], int(r["label"])) for r in rows)
    return CohortSummary(
        n=len(rows),
        counts=dict(sorted(counts.items())),
        flipped=sum(int(r["label_flipped"]) for r in rows),
        overall=_separability(rows),
        training=_separability([r for r in rows if r["split"] == "train"]),
    )


def summarize_cohort(manifest: str | Path) -> CohortSummary:
    """Read a synthetic cohort's ``manifest.csv`` and summarise it.

    Manifests written before the shape features existed are summarised without them.

    Raises:
        InputError: the file is missing or lacks the synthetic ground-truth columns.
    """
    path = Path(manifest)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    return summarize_rows(rows, source=str(path))
