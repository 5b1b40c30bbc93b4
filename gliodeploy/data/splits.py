"""Cross-validation splits: StratifiedKFold on label x scanner, saved as nnU-Net-style splits.json.

A splits file that already exists is reused (so reruns, resumed runs and fold jobs on a cluster all
use the same folds); it must name exactly the training subjects of the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from gliodeploy.data.manifest import ManifestRow, check_strata
from gliodeploy.errors import ConfigError
from gliodeploy.utils.atomic import atomic_write

Split = dict[str, list[str]]


def make_splits(rows: list[ManifestRow], n_folds: int = 10, seed: int = 0) -> list[Split]:
    """Stratified K-fold over ``rows`` (label x scanner strata), shuffled with a fixed seed.

    Returns one ``{"train": [...], "val": [...]}`` per fold; every subject is in exactly one ``val``.
    """
    from sklearn.model_selection import StratifiedKFold  # heavy: only when splitting

    check_strata(rows, n_folds, source="training rows")
    subjects = [r.subject for r in rows]
    strata = [r.stratum for r in rows]
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits: list[Split] = []
    for train_idx, val_idx in skf.split(subjects, strata):
        splits.append(
            {"train": sorted(subjects[i] for i in train_idx), "val": sorted(subjects[i] for i in val_idx)}
        )
    return splits


def read_splits(path: str | Path) -> list[Split]:
    """Read a splits.json file (list of ``{"train": [...], "val": [...]}``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read splits file {path}: {exc}") from exc
    ok = isinstance(data, list) and all(
        isinstance(s, dict)
        and set(s) == {"train", "val"}
        and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in s.values())
        for s in data
    )
    if not ok or not data:
        raise ConfigError(f"splits file {path} is not a list of {{'train': [...], 'val': [...]}} objects")
    return data


def validate_splits(splits: list[Split], rows: list[ManifestRow], *, source: str = "splits") -> None:
    """Check that the folds partition exactly the training subjects of ``rows``."""
    known = {r.subject for r in rows}
    named: set[str] = set()
    seen_val: list[str] = []
    for k, s in enumerate(splits):
        if set(s["train"]) & set(s["val"]):
            raise ConfigError(f"{source}: fold {k} has subjects in both train and val")
        named |= set(s["train"]) | set(s["val"])
        seen_val += s["val"]
    unknown = sorted(named - known)
    if unknown:
        raise ConfigError(
            f"{source} names subject(s) not among the manifest's training rows: {', '.join(unknown[:10])}"
            " (delete the splits file to re-split)"
        )
    uncovered = sorted(known - set(seen_val))
    if uncovered or len(seen_val) != len(set(seen_val)):
        raise ConfigError(
            f"{source}: validation folds must hold every training subject exactly once "
            f"(missing: {', '.join(uncovered[:10]) or 'none'}); delete the splits file to re-split"
        )


def load_or_create_splits(path: str | Path, rows: list[ManifestRow], n_folds: int, seed: int) -> list[Split]:
    """Reuse ``path`` if it exists (validated against ``rows`` and ``n_folds``), else create and save it."""
    path = Path(path)
    if path.exists():
        splits = read_splits(path)
        if len(splits) != n_folds:
            raise ConfigError(
                f"{path} holds {len(splits)} folds but the experiment asks for {n_folds}; "
                "use a new run directory or delete the splits file"
            )
        validate_splits(splits, rows, source=str(path))
        return splits
    splits = make_splits(rows, n_folds, seed)
    atomic_write(path, json.dumps(splits, indent=2) + "\n")
    return splits


def make_inner_split(rows: list[ManifestRow], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out ``fraction`` of a fold's training patients for early stopping (``validation = "inner"``).

    Stratified on label x scanner when every stratum has at least two patients, else on the label
    alone; deterministic for a given seed. Returns ``(fit_subjects, inner_val_subjects)``, sorted.
    The outer validation fold is never involved, so its OOF predictions stay unbiased.
    """
    from collections import Counter

    from sklearn.model_selection import StratifiedShuffleSplit

    subjects = [r.subject for r in rows]
    strata = [r.stratum for r in rows]
    if min(Counter(strata).values()) < 2:
        strata = [str(r.label) for r in rows]
    if min(Counter(strata).values()) < 2:
        raise ConfigError(
            f"cannot carve an inner validation split out of {len(rows)} training patients: "
            "a class has fewer than 2 patients (use validation = 'final')"
        )
    n_inner = max(len(set(strata)), round(fraction * len(rows)))
    if n_inner >= len(rows) - len(set(strata)):
        raise ConfigError(
            f"inner_val_fraction {fraction} leaves too few of {len(rows)} training patients to fit on"
        )
    sss = StratifiedShuffleSplit(n_splits=1, test_size=n_inner, random_state=seed)
    fit_idx, inner_idx = next(sss.split(subjects, strata))
    return sorted(subjects[i] for i in fit_idx), sorted(subjects[i] for i in inner_idx)
