"""Test-set predictions of a run's fold models and the TBR baseline on the same preprocessed scans.

Scans go through the training engineer's preprocessing cache (``gliodeploy.data.cache``), so a test
scan is preprocessed exactly as in training and only once for every run that shares the
preprocessing configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.data.manifest import ManifestRow
from gliodeploy.errors import ModelError
from gliodeploy.evaluation.baseline import StaticParameters, static_parameters
from gliodeploy.evaluation.rundata import Predictions


def preprocessing_config(plans: dict[str, Any], run_path: Path) -> Any:
    """The run's ``PreprocessConfig`` from ``plans.json``."""
    from gliodeploy.preprocessing.config import PreprocessConfig

    cfg = plans.get("preprocessing")
    if not isinstance(cfg, dict):
        raise ModelError(f"{run_path / 'plans.json'}: no 'preprocessing' table; cannot preprocess test scans")
    return PreprocessConfig.from_dict(cfg)


def load_volumes(
    rows: Sequence[ManifestRow], cfg: Any, cache_root: str | Path, *, progress: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{subject: (masked SUV [x,y,z], brain mask)}`` on the model grid, through the cache."""
    from gliodeploy.data.cache import build_cache, load_cached

    entries = build_cache(rows, cfg, cache_root, progress=progress)
    out = {}
    for subject, entry in entries.items():
        vol = load_cached(entry)
        out[subject] = (vol.array, vol.mask)
    return out


def predict_volumes(
    models: Sequence[Any], volumes: Sequence[np.ndarray], *, progress: bool = True
) -> np.ndarray:
    """Per-fold probabilities ``[n_volumes, n_models]`` (sigmoid of each model's single logit)."""
    import torch
    from tqdm.auto import tqdm

    if not models:
        raise ModelError("no fold models to evaluate")
    out = np.empty((len(volumes), len(models)), dtype=np.float64)
    with torch.inference_mode():
        for i, vol in enumerate(
            tqdm(volumes, desc="test inference", unit="scan", disable=not progress, leave=False)
        ):
            x = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
            for k, model in enumerate(models):
                logit = model(x)
                if logit.shape != (1, 1):
                    raise ModelError(f"fold model {k} returned shape {tuple(logit.shape)}, expected [1, 1]")
                out[i, k] = float(torch.sigmoid(logit)[0, 0])
    return out


def ensemble_predictions(
    rows: Sequence[ManifestRow],
    volumes: dict[str, tuple[np.ndarray, np.ndarray]],
    models: Sequence[Any],
    *,
    progress: bool = True,
) -> Predictions:
    """Fold-ensemble (mean probability) predictions on the given rows."""
    fold_scores = predict_volumes(models, [volumes[r.subject][0] for r in rows], progress=progress)
    return Predictions(
        subjects=tuple(r.subject for r in rows),
        labels=np.array([r.label for r in rows]),
        scores=fold_scores.mean(axis=1),
        sites=tuple(r.site for r in rows),
        scanners=tuple(r.scanner for r in rows),
        fold_scores=fold_scores,
    )


def baseline_parameters(
    rows: Sequence[ManifestRow],
    volumes: dict[str, tuple[np.ndarray, np.ndarray]],
    spacing_mm: tuple[float, float, float],
) -> dict[str, StaticParameters]:
    """Static FDOPA parameters of every row's preprocessed scan."""
    return {r.subject: static_parameters(*volumes[r.subject], spacing_mm) for r in rows}


def baseline_predictions(
    rows: Sequence[ManifestRow], params: dict[str, StaticParameters], score: str = "tbr_max"
) -> Predictions:
    """A static parameter used as a recurrence score on the given rows."""
    return Predictions(
        subjects=tuple(r.subject for r in rows),
        labels=np.array([r.label for r in rows]),
        scores=np.array([getattr(params[r.subject], score) for r in rows], dtype=np.float64),
        sites=tuple(r.site for r in rows),
        scanners=tuple(r.scanner for r in rows),
    )
