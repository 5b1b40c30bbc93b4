"""Explain one scan with a run's fold models: native-space NIfTI heatmap, model-grid heatmap, PNGs.

Outputs in ``out_dir`` (``<stem>`` = the scan's file name without extension, or its DICOM folder):

* ``<stem>_gradcam_native.nii.gz``: the heatmap on the input scan's own voxel grid (same size,
  spacing, origin and direction), to overlay on the PET in ITK-SNAP or 3D Slicer;
* ``<stem>_gradcam_grid.nii.gz`` and ``<stem>_suv_grid.nii.gz``: heatmap and SUV on the model grid;
* ``<stem>_gradcam_{axial,coronal,sagittal}.png``: overlays through the hottest attention inside
  the brain mask;
* ``<stem>_explanation.json``: probabilities, which models, attention fraction inside the brain.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gliodeploy.errors import InputError, ModelError
from gliodeploy.explain.gradcam import attention_inside, gradcam_models
from gliodeploy.explain.overlay import VIEWS, hottest_voxel, overlay_png
from gliodeploy.utils.atomic import atomic_path, atomic_write


@dataclass
class Explanation:
    """What ``explain_scan`` computed and wrote."""

    subject: str
    folds: list[int]
    probability: float
    fold_probabilities: list[float]
    attention_in_brain: float
    hottest_voxel_grid: tuple[int, int, int]
    hottest_point_mm: tuple[float, float, float]
    slice_voxel_grid: tuple[int, int, int]  # where the PNG slices cross: hottest attention in the brain
    files: dict[str, str] = field(default_factory=dict)

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


def explain_scan(
    run_dir: str | Path,
    scan: str | Path,
    out_dir: str | Path,
    *,
    fold: int | None = None,
    weight_kg: float | None = None,
    assume_suv: bool = False,
) -> Explanation:
    """Grad-CAM of a run's fold model(s) on one PET scan (NIfTI or DICOM folder); writes the outputs."""
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import preprocess, to_grid_image, to_native
    from gliodeploy.training.rundir import RunDir

    models, folds = load_models(run_dir, fold)
    cfg = RunDir(run_dir).preprocessing()
    pet = load_pet(scan, weight_kg=weight_kg, assume_suv=assume_suv)
    pre = preprocess(pet.image, cfg)
    cam = gradcam_models(models, pre.array)
    heat = cam.mean_map
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(scan)
    hot = hottest_voxel(heat)
    hot_mm = tuple(float(v) for v in pre.grid.TransformIndexToPhysicalPoint(hot))
    in_brain = heat * (pre.mask > 0)
    # slices through the hottest attention in the brain (the global peak may sit on the border:
    # that case is reported by attention_in_brain, the slices stay clinically readable)
    centre = hottest_voxel(in_brain) if in_brain.max() > 0 else hot
    files = {
        "native_heatmap": _write_image(
            to_native(heat, pre.grid, pet.image), out / f"{stem}_gradcam_native.nii.gz"
        ),
        "grid_heatmap": _write_image(to_grid_image(heat, pre.grid), out / f"{stem}_gradcam_grid.nii.gz"),
        "grid_suv": _write_image(to_grid_image(pre.array, pre.grid), out / f"{stem}_suv_grid.nii.gz"),
    }
    which = f"fold {folds[0]}" if len(folds) == 1 else f"ensemble of {len(folds)} folds"
    title = f"{stem}: P(recurrence) {cam.probability:.2f}, {which}"
    for view in VIEWS:
        png = overlay_png(
            pre.array, heat, view, spacing=tuple(pre.grid.GetSpacing()), centre=centre, title=title
        )
        files[f"png_{view}"] = str(atomic_write(out / f"{stem}_gradcam_{view}.png", png))
    result = Explanation(
        subject=pet.subject or stem,
        folds=folds,
        probability=cam.probability,
        fold_probabilities=[float(p) for p in cam.probabilities],
        attention_in_brain=attention_inside(heat, pre.mask),
        hottest_voxel_grid=hot,
        hottest_point_mm=hot_mm,
        slice_voxel_grid=centre,
        files=files,
    )
    report = out / f"{stem}_explanation.json"
    result.files["json"] = str(report)
    atomic_write(report, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
