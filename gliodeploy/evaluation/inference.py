"""Test-set predictions of a run's fold models and the TBR baseline on the same preprocessed scans.

Scans go through the training engineer's preprocessing cache (``gliodeploy.data.cache``), so a test
scan is preprocessed exactly as in training and only once for every run that shares the
preprocessing configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gliodeploy.data.manifest import READER_POINT_COLUMN, READER_VOI_COLUMN, ManifestRow
from gliodeploy.errors import InputError, ModelError
from gliodeploy.evaluation.baseline import (
    LESION_SOURCES,
    BaselineSettings,
    StaticParameters,
    hotspot_miss_rate,
    static_parameters,
)
from gliodeploy.evaluation.rundata import Predictions


class GridVolume(NamedTuple):
    """A preprocessed scan: masked SUV and brain mask ``[x, y, z]`` and the grid's LPS origin (mm)."""

    array: np.ndarray
    mask: np.ndarray
    origin: tuple[float, float, float] | None = None


def preprocessing_config(plans: dict[str, Any], run_path: Path) -> Any:
    """The run's ``PreprocessConfig`` from ``plans.json``."""
    from gliodeploy.preprocessing.config import PreprocessConfig

    cfg = plans.get("preprocessing")
    if not isinstance(cfg, dict):
        raise ModelError(f"{run_path / 'plans.json'}: no 'preprocessing' table; cannot preprocess test scans")
    return PreprocessConfig.from_dict(cfg)


def load_volumes(
    rows: Sequence[ManifestRow], cfg: Any, cache_root: str | Path, *, progress: bool = True
) -> dict[str, GridVolume]:
    """``{subject: GridVolume(masked SUV [x,y,z], brain mask, grid origin)}`` on the model grid, through
    the cache."""
    from gliodeploy.data.cache import build_cache, load_cached

    entries = build_cache(rows, cfg, cache_root, progress=progress)
    out = {}
    for subject, entry in entries.items():
        vol = load_cached(entry)
        out[subject] = GridVolume(vol.array, vol.mask, vol.origin)
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


def untrained_prior(run_path: str | Path) -> tuple[Any, str] | None:
    """``(model, description)`` when the run's architecture scores something *before* training.

    A model with a built-in prior (``prior_description`` on it or its backbone, e.g. LesionNet's
    asymmetry prior, whose learned part starts at zero) is deterministic when freshly built; comparing
    the trained folds with it measures what training added. Other models start from random weights
    (chance): None.
    """
    from gliodeploy.training.rundir import RunDir

    model = RunDir(run_path).build_model().eval()
    description = getattr(getattr(model, "backbone", model), "prior_description", None)
    return (model, str(description)) if description else None


def prior_predictions(
    model: Any,
    like: Predictions,
    volumes: dict[str, GridVolume],
    *,
    progress: bool = True,
) -> Predictions:
    """``model``'s probabilities on the patients of ``like`` (same order, labels, sites and scanners)."""
    scores = predict_volumes([model], [volumes[s][0] for s in like.subjects], progress=progress)[:, 0]
    return Predictions(
        subjects=like.subjects, labels=like.labels, scores=scores, sites=like.sites, scanners=like.scanners
    )


def reader_voi_on_grid(
    row: ManifestRow, origin: Sequence[float], spacing_mm: Sequence[float], shape: Sequence[int]
) -> np.ndarray:
    """The row's ``lesion_voi`` mask (non-zero = in) resampled onto the model grid (nearest neighbour)."""
    import SimpleITK as sitk

    from gliodeploy.preprocessing.geometry import Grid, image_to_xyz

    where = row.where(READER_VOI_COLUMN)
    try:
        image = sitk.ReadImage(str(row.lesion_voi))
    except RuntimeError as exc:
        raise InputError(f"{where}: cannot read the lesion VOI {row.lesion_voi}: {exc}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{where}: the lesion VOI {row.lesion_voi} is not a 3-D scalar mask")
    binary = sitk.Cast(image != 0, sitk.sitkUInt8)
    grid = Grid(tuple(origin), tuple(spacing_mm), tuple(int(n) for n in shape))  # type: ignore[arg-type]
    out = sitk.Resample(
        binary, grid.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return image_to_xyz(out) > 0


def baseline_parameters(
    rows: Sequence[ManifestRow],
    volumes: dict[str, GridVolume] | dict[str, tuple[np.ndarray, np.ndarray]],
    spacing_mm: tuple[float, float, float],
    settings: BaselineSettings | None = None,
) -> dict[str, StaticParameters]:
    """Static FDOPA parameters of every row's preprocessed scan.

    A row's reader lesion location (``lesion_voi``, else ``lesion_mm``) replaces the automatic hotspot;
    physical mm go to grid voxels through the grid origin stored in the cache. When the row carries a
    true lesion centre (synthetic cohorts), the automatic hotspot's distance to it is recorded
    (``automatic_hotspot_error_mm``). Errors name the manifest line, subject and column.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    out = {}
    for r in rows:
        array, mask = volumes[r.subject][0], volumes[r.subject][1]
        origin = GridVolume(*volumes[r.subject]).origin
        needs_grid = r.lesion_voi is not None or r.lesion_mm is not None
        if needs_grid and origin is None:
            raise InputError(
                f"{r.where()}: the cached scan has no grid geometry for its reader lesion location"
            )
        column, kwargs = None, {}
        if r.lesion_voi is not None:
            column = READER_VOI_COLUMN
            kwargs["reader_voi"] = reader_voi_on_grid(r, origin, spacing_mm, array.shape)  # type: ignore[arg-type]
        elif r.lesion_mm is not None:
            column = READER_POINT_COLUMN
            point = (np.asarray(r.lesion_mm) - np.asarray(origin)) / spacing
            index = np.round(point).astype(int)
            mm = ";".join(f"{v:g}" for v in r.lesion_mm)
            if np.any(index < 0) or np.any(index >= np.asarray(array.shape)):
                raise InputError(
                    f"{r.where(column)}: lesion point {mm} mm lies outside the model grid (LPS mm?)"
                )
            if not mask[tuple(index)]:
                raise InputError(
                    f"{r.where(column)}: lesion point {mm} mm lies outside the brain mask (LPS mm?)"
                )
            kwargs["reader_point"] = point
        try:
            p = static_parameters(array, mask, spacing_mm, settings, **kwargs)
        except InputError as exc:  # keep the class, name the row
            raise type(exc)(f"{r.where(column)}: {exc}") from exc
        if origin is not None and p.automatic_voxel is not None:
            hot = np.asarray(origin) + np.asarray(p.automatic_voxel) * spacing
            error = None
            if r.truth_lesion_mm is not None:
                error = float(np.linalg.norm(hot - np.asarray(r.truth_lesion_mm)))
            p = replace(
                p,
                automatic_hotspot_mm=tuple(float(v) for v in hot),  # type: ignore[arg-type]
                automatic_hotspot_error_mm=error,
            )
        out[r.subject] = p
    return out


def baseline_summary(
    rows: Sequence[ManifestRow], params: dict[str, StaticParameters], settings: BaselineSettings | None = None
) -> dict[str, Any]:
    """Cohort-level facts of the baseline for metrics.json: the settings, how many scans used each lesion
    source, and (cohorts with a true lesion centre) how often the automatic hotspot missed it."""
    sources = [params[r.subject].lesion_source for r in rows]
    return {
        "settings": (settings or BaselineSettings()).to_dict(),
        "lesion_sources": {name: sources.count(name) for name in LESION_SOURCES},
        "hotspot_miss": hotspot_miss_rate(
            [params[r.subject].automatic_hotspot_error_mm for r in rows],
            [r.label for r in rows],
            [r.split for r in rows],
        ),
    }


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
