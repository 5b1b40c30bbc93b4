"""Explain one scan with a run's fold models: native-space NIfTI heatmap, model-grid heatmap, PNGs.

Outputs in ``out_dir`` (``<stem>`` = the scan's file name without extension, or its DICOM folder):

* ``<stem>_gradcam_native.nii.gz``: the heatmap on the input scan's own voxel grid (same size,
  spacing, origin and direction), to overlay on the PET in ITK-SNAP or 3D Slicer;
* ``<stem>_gradcam_grid.nii.gz`` and ``<stem>_suv_grid.nii.gz``: heatmap and SUV on the model grid;
* ``<stem>_gradcam_{axial,coronal,sagittal}.png``: cuts through the map's peak (PET in grey, map
  in colour, brain outline, true lesion centre when known);
* ``<stem>_explanation.json``: probabilities, which models and layer, and the localisation fields:
  ``attention_inside_brain`` (share of the map inside the brain mask), ``peak_voxel`` (model grid
  index), ``peak_mm`` (physical LPS mm: the same point in the grid's and the native scan's space),
  ``peak_voxel_native`` (index in the native scan), and with a known lesion centre (``--lesion-mm``
  or the manifest's ``lesion_center_mm``) ``peak_to_lesion_mm`` and ``localised`` (<= 20 mm).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.errors import InputError, ModelError
from gliodeploy.explain.gradcam import (
    METHODS,
    gradcam_models,
    layer_resolution,
    resolution_warning,
)
from gliodeploy.explain.localisation import LOCALISED_MM, grid_index, localise
from gliodeploy.explain.overlay import VIEWS, overlay_png
from gliodeploy.utils.atomic import atomic_path, atomic_write


@dataclass
class Explanation:
    """What ``explain_scan`` computed and wrote (the JSON summary)."""

    subject: str
    folds: list[int]
    probability: float
    fold_probabilities: list[float]
    method: str
    layer: str
    layer_feature_shape: list[int]
    layer_mm_per_voxel: list[float]
    layer_warning: str | None
    attention_inside_brain: float
    map_empty: bool  # all-zero map: no positive evidence at this layer, no peak
    peak_voxel: list[int] | None  # model grid index [x, y, z]
    peak_mm: list[float] | None  # physical LPS mm (grid and native scan share it)
    peak_voxel_native: list[int] | None  # index in the native scan (None: outside its field of view)
    peak_inside_brain: bool
    peak_smoothing_mm: float
    lesion_mm: list[float] | None  # true lesion centre, LPS mm
    lesion_source: str | None  # "option" (--lesion-mm) or "manifest"
    peak_to_lesion_mm: float | None
    localised: bool | None
    localisation_threshold_mm: float
    files: dict[str, str] = field(default_factory=dict)
    #: the DICOM series read (``series_uid``) and, for a folder holding several, why (``series_choice``)
    series: dict[str, str] = field(default_factory=dict)

    @property
    def attention_in_brain(self) -> float:
        """Former name of :attr:`attention_inside_brain`."""
        return self.attention_inside_brain

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def load_models(run_dir: str | Path, fold: int | None) -> tuple[list, list[int]]:
    """One fold's model (``fold=k``) or every fold's (``fold=None``: the ensemble), eval mode, CPU."""
    from gliodeploy.training.rundir import RunDir

    run = RunDir(run_dir)
    if not Path(run_dir).is_dir():
        raise ModelError(f"run directory {run_dir} does not exist")
    if fold is None:
        return run.load_fold_models(), list(range(run.n_folds))
    if not 0 <= fold < run.n_folds:
        raise InputError(f"--fold {fold} out of range: the run has folds 0..{run.n_folds - 1}")
    from safetensors.torch import load_file

    weights = run.weights_to_load(fold)
    if not weights.is_file() or not run.is_fold_done(fold):
        raise ModelError(f"{run_dir}: fold {fold} is not finished (no done.json / {weights.name})")
    model = run.build_model()
    try:
        model.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"cannot load {weights}: {exc}") from exc
    return [model.eval()], [fold]


def _stem(scan: str | Path) -> str:
    """Output file prefix: the scan's file name without NIfTI extensions (or the DICOM folder's name)."""
    name = Path(scan).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _write_image(image, path: Path) -> str:
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return str(path)


def truth_from_manifest(
    manifest: str | Path, scan: str | Path, subject: str | None
) -> tuple[float, ...] | None:
    """The manifest's true lesion centre (``lesion_center_mm``) of the row whose image is ``scan``
    (else whose subject is ``subject``); None when the row has none. InputError: no such row."""
    from gliodeploy.data.manifest import read_manifest

    cohort = read_manifest(manifest, require_train=False, check_files=False)
    target = Path(scan).resolve()
    rows = [r for r in cohort.rows if r.image == target] or [
        r for r in cohort.rows if subject and r.subject == subject
    ]
    if not rows:
        raise InputError(f"manifest {manifest} has no row for scan {scan} (subject {subject or '?'})")
    return rows[0].truth_lesion_mm


def _native_index(native, point_mm) -> list[int] | None:
    rounded = list(native.TransformPhysicalPointToIndex([float(v) for v in point_mm]))  # nearest voxel
    if any(not 0 <= r < n for r, n in zip(rounded, native.GetSize(), strict=True)):
        return None
    return rounded


def _title(stem: str, probability: float, which: str, loc: dict[str, Any]) -> str:
    inside = loc["attention_inside_brain"]
    lines = [f"{stem}: P(recurrence) {probability:.2f}, {which}"]
    if loc["map_empty"]:
        return "\n".join(
            [*lines, "EMPTY map: no positive Grad-CAM evidence at this layer (cut: brain centre)"]
        )
    where = "inside" if loc["peak_inside_brain"] else "OUTSIDE"
    lines.append(f"{inside:.0%} of the attention inside the brain; peak {where} the brain")
    if loc["peak_to_lesion_mm"] is not None:
        verdict = "localised" if loc["localised"] else "NOT localised"
        lines.append(f"peak {loc['peak_to_lesion_mm']:.0f} mm from the true lesion centre: {verdict}")
    return "\n".join(lines)


def explain_scan(
    run_dir: str | Path,
    scan: str | Path,
    out_dir: str | Path,
    *,
    fold: int | None = None,
    weight_kg: float | None = None,
    assume_suv: bool = False,
    layer: str | None = None,
    method: str = "gcam",
    lesion_mm: tuple[float, float, float] | None = None,
    manifest: str | Path | None = None,
    smooth_mm: float = 0.0,
    series_uid: str | None = None,
) -> Explanation:
    """Grad-CAM of a run's fold model(s) on one PET scan (NIfTI or DICOM folder); writes the outputs.

    ``layer`` (default: the model's registered Grad-CAM layer, see ``gradcam.default_layer``) and
    ``method`` (``"gcam"`` / ``"gcampp"``) choose the map. The true lesion centre is ``lesion_mm``
    (LPS mm, the scan's physical space) or, with ``manifest``, its ``lesion_center_mm`` for this scan.
    """
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import preprocess, to_grid_image, to_native
    from gliodeploy.training.rundir import RunDir

    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    models, folds = load_models(run_dir, fold)
    cfg = RunDir(run_dir).preprocessing()
    pet = load_pet(scan, weight_kg=weight_kg, assume_suv=assume_suv, series_uid=series_uid)
    source = None
    if lesion_mm is not None:
        source = "option"
    elif manifest is not None:
        lesion_mm = truth_from_manifest(manifest, scan, pet.subject)  # type: ignore[assignment]
        source = "manifest" if lesion_mm is not None else None
    pre = preprocess(pet.image, cfg)
    cam = gradcam_models(models, pre.array, layer=layer, method=method)
    heat = cam.mean_map
    spacing = tuple(pre.grid.GetSpacing())
    origin = tuple(pre.grid.GetOrigin())
    mm = layer_resolution(cam.feature_shape, pre.array.shape, spacing)
    loc = localise(heat, pre.mask, origin, spacing, lesion_mm=lesion_mm, smooth_mm=smooth_mm)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(scan)
    files = {
        "native_heatmap": _write_image(
            to_native(heat, pre.grid, pet.image), out / f"{stem}_gradcam_native.nii.gz"
        ),
        "grid_heatmap": _write_image(to_grid_image(heat, pre.grid), out / f"{stem}_gradcam_grid.nii.gz"),
        "grid_suv": _write_image(to_grid_image(pre.array, pre.grid), out / f"{stem}_suv_grid.nii.gz"),
    }
    which = f"fold {folds[0]}" if len(folds) == 1 else f"ensemble of {len(folds)} folds"
    title = _title(stem, cam.probability, which, loc)
    lesion_index = grid_index(lesion_mm, origin, spacing) if lesion_mm is not None else None
    cut = loc["peak_voxel"] or [int(round(c)) for c in np.argwhere(pre.mask > 0).mean(axis=0)]
    for view in VIEWS:
        png = overlay_png(
            pre.array,
            heat,
            view,
            spacing=spacing,
            centre=tuple(cut),
            title=title,
            mask=pre.mask,
            lesion_index=lesion_index,
        )
        files[f"png_{view}"] = str(atomic_write(out / f"{stem}_gradcam_{view}.png", png))
    result = Explanation(
        subject=pet.subject or stem,
        folds=folds,
        probability=cam.probability,
        fold_probabilities=[float(p) for p in cam.probabilities],
        method=method,
        layer=cam.layer,
        layer_feature_shape=list(cam.feature_shape),
        layer_mm_per_voxel=list(mm),
        layer_warning=resolution_warning(cam.layer, cam.feature_shape, mm),
        attention_inside_brain=loc["attention_inside_brain"],
        map_empty=loc["map_empty"],
        peak_voxel=loc["peak_voxel"],
        peak_mm=loc["peak_mm"],
        peak_voxel_native=_native_index(pet.image, loc["peak_mm"]) if loc["peak_mm"] else None,
        peak_inside_brain=loc["peak_inside_brain"],
        peak_smoothing_mm=loc["peak_smoothing_mm"],
        lesion_mm=loc["lesion_mm"],
        lesion_source=source,
        peak_to_lesion_mm=loc["peak_to_lesion_mm"],
        localised=loc["localised"],
        localisation_threshold_mm=float(LOCALISED_MM),
        files=files,
        series={k: str(pet.metadata[k]) for k in ("series_uid", "series_choice") if pet.metadata.get(k)},
    )
    report = out / f"{stem}_explanation.json"
    result.files["json"] = str(report)
    atomic_write(report, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
