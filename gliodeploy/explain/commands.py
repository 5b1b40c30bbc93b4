"""``gliodeploy explain``: Grad-CAM heatmaps of a trained run on one PET scan."""

from __future__ import annotations

from pathlib import Path

import typer


def explain(
    run_dir: Path = typer.Argument(..., help="Run directory written by `gliodeploy train`."),
    scan: Path = typer.Argument(
        ..., help="PET scan: NIfTI file (BIDS-PET sidecar beside it) or DICOM folder."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the heatmaps and PNG overlays."),
    weight: float | None = typer.Option(
        None, "--weight", min=1.0, help="Patient weight in kg, for SUV when the scan does not carry it."
    ),
    assume_suv: bool = typer.Option(False, "--assume-suv", help="The scan is already in SUV: use it as is."),
    fold: int | None = typer.Option(
        None, "--fold", min=0, help="Explain one fold's model (default: ensemble)."
    ),
    ensemble: bool = typer.Option(
        False, "--ensemble", help="Explain the ensemble: mean of every fold's map."
    ),
) -> None:
    """Grad-CAM (medcam) of the fold models on one scan, for the positive class (recurrence).

    Writes a heatmap NIfTI in the scan's NATIVE space (same size, spacing, origin and direction as
    the input: load it as an overlay on the PET in ITK-SNAP or 3D Slicer), the heatmap and SUV on the
    model grid, axial/coronal/sagittal PNG overlays through the hottest region, and a JSON summary
    with the probability and the fraction of attention inside the brain mask (a low fraction means
    the model looks at the skull or the image border: distrust that prediction).
    """
    from gliodeploy.errors import InputError
    from gliodeploy.explain.explainer import explain_scan

    if fold is not None and ensemble:
        raise InputError("choose either --fold K or --ensemble, not both")
    if weight is not None and assume_suv:
        raise InputError("--weight and --assume-suv are exclusive: an SUV scan needs no weight")
    result = explain_scan(run_dir, scan, out, fold=fold, weight_kg=weight, assume_suv=assume_suv)
    which = f"fold {fold}" if fold is not None else "ensemble"
    typer.echo(f"P(recurrence) = {result.probability:.3f} ({which})")
    typer.echo(f"attention inside the brain mask: {result.attention_in_brain:.1%}")
    if result.attention_in_brain < 0.5:
        typer.echo("warning: most of the attention lies outside the brain mask", err=True)
    for kind, path in result.files.items():
        typer.echo(f"{kind}: {path}")
