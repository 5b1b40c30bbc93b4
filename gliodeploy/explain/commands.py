"""``gliodeploy explain``: Grad-CAM heatmaps of a trained run on one PET scan."""

from __future__ import annotations

from pathlib import Path

import typer


def explain(
    run_dir: Path = typer.Argument(..., help="Run directory written by `gliodeploy train`."),
    scan: Path | None = typer.Argument(
        None, help="PET scan: NIfTI file (BIDS-PET sidecar beside it) or DICOM folder."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder for the heatmaps and PNG overlays."
    ),
    weight: float | None = typer.Option(
        None, "--weight", min=1.0, help="Patient weight in kg, for SUV when the scan does not carry it."
    ),
    assume_suv: bool = typer.Option(False, "--assume-suv", help="The scan is already in SUV: use it as is."),
    series_uid: str | None = typer.Option(
        None,
        "--series-uid",
        help="DICOM SeriesInstanceUID to read from a folder holding several series [default: the PET "
        "series, attenuation-corrected first; the choice is printed].",
    ),
    fold: int | None = typer.Option(
        None, "--fold", min=0, help="Explain one fold's model (default: ensemble)."
    ),
    ensemble: bool = typer.Option(
        False, "--ensemble", help="Explain the ensemble: mean of every fold's map."
    ),
    layer: str | None = typer.Option(
        None,
        "--layer",
        help="Module to explain, e.g. backbone.features.13 (default: the model's registered Grad-CAM "
        "layer). --list-layers shows each layer's resolution.",
    ),
    method: str = typer.Option("gcam", "--method", help="gcam (Grad-CAM) or gcampp (Grad-CAM++)."),
    lesion_mm: str | None = typer.Option(
        None,
        "--lesion-mm",
        help="True lesion centre 'x,y,z' in LPS mm (the scan's physical space): the JSON then reports "
        "the peak's distance to it and whether it is localised (<= 20 mm).",
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="Cohort manifest: take the true lesion centre from its lesion_center_mm column (synthetic).",
    ),
    list_layers: bool = typer.Option(
        False, "--list-layers", help="List the model's layers with their feature-map resolution and exit."
    ),
) -> None:
    """Grad-CAM (medcam) of the fold models on one scan, for the positive class (recurrence).

    Writes a heatmap NIfTI in the scan's NATIVE space (same size, spacing, origin and direction as
    the input: load it as an overlay on the PET in ITK-SNAP or 3D Slicer), the heatmap and SUV on the
    model grid, axial/coronal/sagittal PNG cuts through the map's peak (PET in grey, brain outline),
    and a JSON summary: probability, layer, the fraction of attention inside the brain mask (a low
    fraction means the model looks at the skull or the image border: distrust that prediction), the
    peak (grid voxel, LPS mm, native voxel) and, with a known lesion centre, its distance to it.
    """
    from gliodeploy.errors import InputError
    from gliodeploy.explain.explainer import explain_scan
    from gliodeploy.explain.localisation import parse_lesion_mm

    if list_layers:
        _list_layers(run_dir)
        return
    if scan is None or out is None:
        raise InputError("explain needs a SCAN and --out (or --list-layers)")
    if fold is not None and ensemble:
        raise InputError("choose either --fold K or --ensemble, not both")
    if weight is not None and assume_suv:
        raise InputError("--weight and --assume-suv are exclusive: an SUV scan needs no weight")
    point = parse_lesion_mm(lesion_mm) if lesion_mm is not None else None
    result = explain_scan(
        run_dir,
        scan,
        out,
        fold=fold,
        weight_kg=weight,
        assume_suv=assume_suv,
        layer=layer,
        method=method,
        lesion_mm=point,
        manifest=manifest,
        series_uid=series_uid,
    )
    if result.series.get("series_choice"):
        typer.echo(f"{scan}: {result.series['series_choice']}", err=True)
    if result.layer_warning:
        typer.echo(f"warning: {result.layer_warning}", err=True)
    which = f"fold {fold}" if fold is not None else "ensemble"
    typer.echo(f"P(recurrence) = {result.probability:.3f} ({which})")
    typer.echo(f"attention inside the brain mask: {result.attention_inside_brain:.1%}")
    if result.peak_mm is None:
        typer.echo(
            f"warning: the Grad-CAM map is empty (no positive evidence at layer {result.layer}); "
            "try --method gcampp or another --layer",
            err=True,
        )
    else:
        peak = ", ".join(f"{v:.1f}" for v in result.peak_mm)
        typer.echo(f"Grad-CAM peak: voxel {result.peak_voxel} of the model grid, ({peak}) mm LPS")
    if result.peak_to_lesion_mm is not None:
        verdict = "localised" if result.localised else "not localised"
        typer.echo(
            f"peak to true lesion centre: {result.peak_to_lesion_mm:.1f} mm ({verdict}, "
            f"<= {result.localisation_threshold_mm:.0f} mm)"
        )
    if result.attention_inside_brain < 0.5:
        typer.echo("warning: most of the attention lies outside the brain mask", err=True)
    for kind, path in result.files.items():
        typer.echo(f"{kind}: {path}")


def _list_layers(run_dir: Path) -> None:
    from gliodeploy.errors import ModelError
    from gliodeploy.explain.gradcam import default_layer, layer_table
    from gliodeploy.training.rundir import RunDir

    if not run_dir.is_dir():
        raise ModelError(f"run directory {run_dir} does not exist")
    run = RunDir(run_dir)
    cfg = run.preprocessing()
    model = run.build_model()
    chosen = default_layer(model)
    typer.echo(f"model grid {tuple(cfg.shape)} at {tuple(cfg.spacing)} mm; default layer: {chosen}")
    for row in layer_table(model, cfg.shape, cfg.spacing):
        shape = "x".join(map(str, row["feature_shape"]))
        mm = max(row["mm_per_voxel"])
        mark = " (default)" if row["layer"] == chosen else ""
        typer.echo(
            f"{row['layer']:<40} {row['type']:<16} {row['channels']:>5} ch {shape:>12} {mm:6.1f} mm{mark}"
        )
