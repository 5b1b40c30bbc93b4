"""Grad-CAM localisation over a cohort: does the fold ensemble's map point at the lesion?

:func:`explain_cohort` explains every **true recurrence** of a split (the manifest's ``true_label``
column when present - synthetic cohorts, where ``label`` may be deliberately flipped - else
``label``) with the fold ensemble, on the preprocessed scans of the cache, and returns:

* the localisation rate: share of the scans with a known lesion centre (``lesion_center_mm``) whose
  map peak lies within 20 mm of it, with a Wilson 95 % CI;
* the median share of attention inside the brain mask (every explained scan);
* per-subject rows (probability, inside fraction, peak voxel / mm, distance, localised).

``gliodeploy evaluate`` runs it on the test split (``--localisation``) and writes it into
metrics.json; :func:`gliodeploy.explain.localisation.localisation_diagnosis` turns it into words.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gliodeploy.explain.gradcam import (
    METHODS,
    CamModel,
    explain_with,
    layer_resolution,
    resolution_warning,
)
from gliodeploy.explain.localisation import LOCALISED_MM, localise, summarise

#: Manifest column with the true class of synthetic cohorts (``label`` may be a flipped, recorded one).
TRUE_LABEL_COLUMN = "true_label"


def read_true_labels(manifest: str | Path) -> dict[str, int] | None:
    """``{subject: true_label}`` from the manifest's ``true_label`` column; None without the column
    (rows with an empty or malformed cell are left out)."""
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [(c or "").strip() for c in reader.fieldnames or []]
        if TRUE_LABEL_COLUMN not in columns:
            return None
        out = {}
        for rec in reader:
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            if rec.get(TRUE_LABEL_COLUMN) in ("0", "1", "0.0", "1.0"):
                out[rec["subject"]] = int(float(rec[TRUE_LABEL_COLUMN]))
        return out


def recurrences(rows: Sequence[Any], true_labels: Mapping[str, int] | None) -> tuple[list[Any], str]:
    """The rows that are recurrences: by ``true_labels`` when given (rows missing there fall back to
    their ``label``), else by ``label``; and which column decided (``"true_label"`` / ``"label"``)."""
    if true_labels:
        return [r for r in rows if true_labels.get(r.subject, r.label) == 1], TRUE_LABEL_COLUMN
    return [r for r in rows if r.label == 1], "label"


def explain_cohort(
    models: Sequence[Any],
    rows: Sequence[Any],
    volumes: Mapping[str, Any],
    spacing_mm: Sequence[float],
    *,
    true_labels: Mapping[str, int] | None = None,
    layer: str | None = None,
    method: str = "gcam",
    smooth_mm: float = 0.0,
    threshold_mm: float = LOCALISED_MM,
    population: str = "true recurrences",
    progress: bool = False,
) -> dict[str, Any]:
    """Grad-CAM localisation of the fold ensemble ``models`` on the true recurrences among ``rows``.

    ``volumes``: ``{subject: (masked SUV [x,y,z], brain mask, grid origin LPS mm)}`` on the model grid
    (``gliodeploy.evaluation.inference.load_volumes`` / the preprocessing cache); ``spacing_mm`` the
    grid's spacing. Rows are manifest rows (``subject``, ``label``, ``truth_lesion_mm``). Returns a
    JSON-ready dict (see the module docstring).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    chosen, label_source = recurrences(rows, true_labels)
    cams = [CamModel(m, layer=layer, method=method) for m in models]
    subjects: list[dict[str, Any]] = []
    feature_shape: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()
    for r in tqdm(chosen, desc="Grad-CAM", unit="scan", disable=not progress, leave=False):
        vol = volumes[r.subject]
        array, mask = vol[0], vol[1]
        origin = vol[2] if len(vol) > 2 else None
        cam = explain_with(cams, array)
        feature_shape, shape = cam.feature_shape, array.shape
        truth = r.truth_lesion_mm if origin is not None else None
        loc = localise(
            cam.mean_map,
            mask,
            origin if origin is not None else (0.0, 0.0, 0.0),
            spacing_mm,
            lesion_mm=truth,
            smooth_mm=smooth_mm,
            threshold_mm=threshold_mm,
        )
        if origin is None:  # an old cache entry without geometry: no physical coordinates
            loc["peak_mm"] = None
        true_label = (true_labels or {}).get(r.subject)
        keys = (
            "attention_inside_brain",
            "map_empty",
            "peak_voxel",
            "peak_mm",
            "peak_inside_brain",
            "lesion_mm",
        )
        subjects.append(
            {
                "subject": r.subject,
                "label": int(r.label),
                "true_label": int(true_label) if true_label is not None else None,
                "probability": cam.probability,
                **{k: loc[k] for k in keys},
                **{k: loc[k] for k in ("peak_to_lesion_mm", "localised")},
            }
        )
    mm = list(layer_resolution(feature_shape, shape, spacing_mm)) if feature_shape else []
    layer_name = cams[0].layer if cams else (layer or "")
    out = {
        "population": population,
        "label_source": label_source,
        "method": method,
        "method_name": METHODS[method],
        "layer": layer_name,
        "layer_feature_shape": list(feature_shape),
        "layer_mm_per_voxel": mm,
        "layer_warning": resolution_warning(layer_name, feature_shape, mm) if mm else None,
        "peak_smoothing_mm": float(smooth_mm),
        **summarise(subjects, threshold_mm=threshold_mm),
        "n_models": len(cams),
        "seconds": time.perf_counter() - start,
        "subjects": subjects,
    }
    return out


def localisation_summary(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    split: str = "test",
    cache_root: str | Path | None = None,
    layer: str | None = None,
    method: str = "gcam",
    smooth_mm: float = 0.0,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`explain_cohort` of a run's fold ensemble on a manifest's split (``"test"`` / ``"train"``),
    preprocessing through the cache (default ``MANIFEST_FOLDER/cache``, as in training)."""
    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.training.rundir import RunDir

    cohort = read_manifest(manifest, require_train=False)
    rows = cohort.test if split == "test" else cohort.train
    true_labels = read_true_labels(cohort.path)
    chosen, _ = recurrences(rows, true_labels)
    run = RunDir(run_dir)
    cfg = run.preprocessing()
    entries = build_cache(chosen, cfg, cache_root or cohort.path.parent / "cache", progress=progress)
    volumes = {}
    for subject, entry in entries.items():
        v = load_cached(entry)
        volumes[subject] = (v.array, v.mask, v.origin)
    population = ("external " if split == "test" else "training ") + "true recurrences"
    return explain_cohort(
        run.load_fold_models(),
        chosen,
        volumes,
        tuple(cfg.spacing),
        true_labels=true_labels,
        layer=layer,
        method=method,
        smooth_mm=smooth_mm,
        population=population,
        progress=progress,
    )
