"""Summary of a generated cohort: subjects per site/scanner/label and the separability of the true TBR."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gliodeploy.errors import InputError


@dataclass(frozen=True)
class CohortSummary:
    """Counts per (site, scanner, label) and ROC AUCs of the ground-truth TBRmax.

    ``auc_observed`` scores the recorded labels (what a TBR threshold can reach on this cohort);
    ``auc_true`` scores the true labels (no label noise). ``None`` when a class is missing.
    """

    n: int
    counts: dict[tuple[str, str, int], int]
    flipped: int
    auc_observed: float | None
    auc_true: float | None


def _auc(labels: list[int], scores: list[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def summarize_cohort(manifest: str | Path) -> CohortSummary:
    """Read a synthetic cohort's ``manifest.csv`` and summarise it.

    Raises:
        InputError: the file is missing or lacks the synthetic ground-truth columns.
    """
    path = Path(manifest)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    needed = {"site", "scanner", "label", "true_label", "label_flipped", "tbr_max_true"}
    missing = needed - set(rows[0] if rows else {})
    if missing:
        raise InputError(
            f"{path}: not a synthetic cohort manifest, missing column(s) {', '.join(sorted(missing))}"
        )
    counts = Counter((r["site"], r["scanner"], int(r["label"])) for r in rows)
    tbr = [float(r["tbr_max_true"]) for r in rows]
    return CohortSummary(
        n=len(rows),
        counts=dict(sorted(counts.items())),
        flipped=sum(int(r["label_flipped"]) for r in rows),
        auc_observed=_auc([int(r["label"]) for r in rows], tbr),
        auc_true=_auc([int(r["true_label"]) for r in rows], tbr),
    )
