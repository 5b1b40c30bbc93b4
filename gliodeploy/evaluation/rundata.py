"""Read what ``gliodeploy train`` left in a run directory (see docs/ARCHITECTURE.md, "Run directory").

Only files are read here (no torch): OOF predictions, per-fold epoch logs, per-patient validation
losses and the suspect-label flags. Every missing or malformed file raises
:class:`~gliodeploy.errors.ModelError` naming the file.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.errors import InputError, ModelError

OOF_FILE = "oof_predictions.csv"
PLANS_FILE = "plans.json"
SUSPECT_FILES = ("suspect_labels.csv", "suspect_labels.json")


@dataclass(frozen=True)
class Predictions:
    """Scores of one model (or baseline) on a set of patients, aligned row by row."""

    subjects: tuple[str, ...]
    labels: np.ndarray  # int 0/1
    scores: np.ndarray  # float: probability of recurrence (or a TBR-like score)
    sites: tuple[str, ...] = ()
    scanners: tuple[str, ...] = ()
    folds: np.ndarray | None = None  # OOF: fold of each row
    fold_scores: np.ndarray | None = None  # test: [n, K] per-fold probabilities

    def __post_init__(self) -> None:
        n = len(self.subjects)
        if self.labels.shape != (n,) or self.scores.shape != (n,):
            raise InputError(
                f"predictions misaligned: {n} subjects, labels {self.labels.shape}, "
                f"scores {self.scores.shape}"
            )


@dataclass
class FoldLog:
    """One fold's epoch log (``fold_<k>/log.jsonl``) and per-patient validation losses."""

    fold: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    patient_losses: dict[str, list[float]] = field(default_factory=dict)  # subject -> loss per epoch


@dataclass
class RunData:
    """Everything the report needs from one run directory, without loading any model."""

    path: Path
    name: str
    plans: dict[str, Any]
    oof: Predictions
    fold_logs: list[FoldLog]
    suspects: set[str]


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def read_oof(path: Path) -> Predictions:
    """Parse ``oof_predictions.csv`` (subject, fold, probability, label, scanner, site)."""
    rows = _read_csv(path)
    if not rows:
        raise ModelError(f"{path}: no out-of-fold predictions (is training finished?)")
    missing = {"subject", "fold", "probability", "label"} - set(rows[0])
    if missing:
        raise ModelError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    try:
        probs = np.array([float(r["probability"]) for r in rows])
        labels = np.array([int(float(r["label"])) for r in rows])
        folds = np.array([int(r["fold"]) for r in rows])
    except ValueError as exc:
        raise ModelError(f"{path}: non-numeric probability/label/fold: {exc}") from exc
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ModelError(f"{path}: probabilities must be finite and in [0, 1]")
    return Predictions(
        subjects=tuple(r["subject"] for r in rows),
        labels=labels,
        scores=probs,
        sites=tuple(r.get("site", "") for r in rows),
        scanners=tuple(r.get("scanner", "") for r in rows),
        folds=folds,
    )


def _read_patient_losses(path: Path) -> dict[str, list[float]]:
    """Wide (subject, then one column per epoch) or long (subject, epoch, loss) CSV."""
    rows = _read_csv(path)
    if not rows:
        return {}
    cols = list(rows[0])
    out: dict[str, list[float]] = {}
    try:
        if {"subject", "epoch", "loss"} <= set(cols):
            by_subject: dict[str, dict[int, float]] = {}
            for r in rows:
                by_subject.setdefault(r["subject"], {})[int(r["epoch"])] = float(r["loss"])
            return {s: [v[e] for e in sorted(v)] for s, v in by_subject.items()}
        key = "subject" if "subject" in cols else cols[0]
        epochs = [c for c in cols if c != key]
        for r in rows:
            out[r[key]] = [float(r[c]) if r[c] not in ("", None) else math.nan for c in epochs]
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{path}: malformed per-patient validation losses: {exc}") from exc
    return out


def _read_log(path: Path) -> list[dict[str, Any]]:
    epochs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                epochs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ModelError(f"{path}: line {number} is not JSON: {exc}") from exc
    return epochs


def _read_suspects(path: Path, fold_logs: list[FoldLog], window: int) -> set[str]:
    for name in SUSPECT_FILES:
        f = path / name
        if f.is_file():
            if f.suffix == ".json":
                data = json.loads(f.read_text())
                items = data.get("suspects", data) if isinstance(data, dict) else data
                return {str(s["subject"] if isinstance(s, dict) else s) for s in items}
            rows = _read_csv(f)
            flag = next((c for c in ("suspect", "flagged") if rows and c in rows[0]), None)
            return {
                r["subject"] for r in rows if flag is None or r[flag].strip().lower() in ("1", "true", "yes")
            }
    return flag_suspects(fold_logs, window=window)


def flag_suspects(fold_logs: list[FoldLog], *, window: int = 10) -> set[str]:
    """Patients whose mean validation loss over the last ``window`` epochs is a Tukey outlier.

    Used when training wrote no suspect list: a label the models keep contradicting (loss above
    Q3 + 1.5 IQR of all validation patients) is worth a second look by a physician.
    """
    late = {
        s: float(np.nanmean(v[-window:])) for log in fold_logs for s, v in log.patient_losses.items() if v
    }
    if len(late) < 4:
        return set()
    values = np.array(list(late.values()))
    q1, q3 = np.percentile(values, [25, 75])
    return {s for s, v in late.items() if v > q3 + 1.5 * (q3 - q1)}


def load_run(path: str | Path) -> RunData:
    """Read a finished run directory; :class:`ModelError` if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"run directory {path} does not exist")
    oof_path = path / OOF_FILE
    if not oof_path.is_file():
        raise ModelError(
            f"{path} is not a finished run: {OOF_FILE} is missing (run `gliodeploy train` first)"
        )
    plans: dict[str, Any] = {}
    if (path / PLANS_FILE).is_file():
        try:
            plans = json.loads((path / PLANS_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path / PLANS_FILE}: not valid JSON: {exc}") from exc
    fold_dirs = sorted(
        (p for p in path.glob("fold_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1])
    )
    logs = []
    for d in fold_dirs:
        log = FoldLog(fold=int(d.name.split("_")[1]))
        if (d / "log.jsonl").is_file():
            log.epochs = _read_log(d / "log.jsonl")
        if (d / "val_loss_per_patient.csv").is_file():
            log.patient_losses = _read_patient_losses(d / "val_loss_per_patient.csv")
        logs.append(log)
    window = int(plans.get("suspect_window", plans.get("training", {}).get("suspect_window", 10)))
    name = str(plans.get("name") or plans.get("experiment") or path.name)
    return RunData(path, name, plans, read_oof(oof_path), logs, _read_suspects(path, logs, window))
