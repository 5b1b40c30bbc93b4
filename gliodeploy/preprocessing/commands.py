"""``gliodeploy preprocess``: one scan -> brain-masked SUV on the model grid, as NIfTI for QC."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliodeploy.errors import ConfigError, InputError


def preprocess(
    scan: Path = typer.Argument(..., help="PET scan: a NIfTI file or a DICOM series folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output NIfTI on the model grid (e.g. grid.nii.gz)."),
    mask_out: Path | None = typer.Option(None, "--mask-out", help="Also write the brain mask (uint8 NIfTI)."),
    weight: float | None = typer.Option(
        None, "--weight", help="Patient weight in kg, when the scan does not record it (SUV needs it)."
    ),
    assume_suv: bool = typer.Option(
        False, "--assume-suv", help="The image already holds SUV: skip the SUV conversion."
    ),
    series_uid: str | None = typer.Option(
        None,
        "--series-uid",
        help="DICOM SeriesInstanceUID to read from a folder holding several series [default: the PET "
        "series, attenuation-corrected first; the choice is printed].",
    ),
    preset: str = typer.Option(
        "study", "--preset", help="Model grid: study (2 mm, 128x128x82), demo (4 mm, 64x64x41), tiny (8 mm)."
    ),
    spacing: float | None = typer.Option(None, "--spacing", help="Override the isotropic spacing (mm)."),
    shape: str | None = typer.Option(None, "--shape", help="Override the grid size: X,Y,Z voxels."),
    interpolation: str = typer.Option("linear", "--interpolation", help="linear or bspline."),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Preprocessing of a trained model: a run's plans.json or a JSON preprocessing dict "
        "(replaces --preset/--spacing/--shape/--interpolation).",
    ),
) -> None:
    """Preprocess one PET scan exactly as the models see it and write the result as NIfTI.

    The scan is converted to SUV, oriented LPS, brain-masked, centred on the brain and resampled
    onto the model grid; values stay SUV (the models normalise intensities themselves). Open the
    output over the scan in ITK-SNAP or 3D Slicer to check the mask and the field of view.
    """
    import SimpleITK as sitk
    from rich.console import Console

    from gliodeploy.preprocessing.config import PreprocessConfig
    from gliodeploy.preprocessing.pipeline import preprocess as run_preprocess
    from gliodeploy.utils.atomic import atomic_path

    if weight is not None and assume_suv:
        raise InputError("--weight and --assume-suv exclude each other: SUV needs no weight")
    if config is not None:
        cfg = _config_from_file(config)
    else:
        overrides: dict[str, object] = {"interpolation": interpolation}
        if spacing is not None:
            overrides["spacing"] = (spacing,) * 3
        if shape is not None:
            overrides["shape"] = _parse_shape(shape)
        cfg = PreprocessConfig.preset(preset, **overrides)

    from gliodeploy.io import load_pet  # after the argument checks: they need no reader

    console = Console(stderr=True)
    pet = load_pet(scan, weight_kg=weight, assume_suv=assume_suv, series_uid=series_uid)
    if pet.metadata.get("series_uid"):
        choice = pet.metadata.get("series_choice") or "series given or the only one"
        console.print(f"DICOM series {pet.metadata['series_uid']}: {choice}", soft_wrap=True)
    result = run_preprocess(pet.image, cfg)
    with atomic_path(out) as tmp:
        sitk.WriteImage(result.grid, str(tmp), True)
    if mask_out is not None:
        mask = sitk.GetImageFromArray(result.mask.transpose(2, 1, 0).copy())
        mask.CopyInformation(result.grid)
        with atomic_path(mask_out) as tmp:
            sitk.WriteImage(mask, str(tmp), True)

    t = result.timings
    centre = ", ".join(f"{c:.1f}" for c in result.brain_centre_mm)
    console.print(
        f"{scan} -> {out}: grid {'x'.join(map(str, cfg.shape))} at {cfg.spacing[0]:g} mm, "
        f"brain {result.brain_volume_ml:.0f} mL centred at ({centre}) mm LPS"
        + (f", {result.brain_cut:.1%} cut" if result.brain_cut else "")
    )
    console.print(
        f"preprocessing {t['total']:.2f} s (mask {t['mask']:.2f} s, resample {t['resample']:.2f} s); "
        f"config fingerprint {cfg.fingerprint()[:12]}"
    )


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"--shape must be three integers X,Y,Z (e.g. 128,128,82), got {text!r}")
    return values  # type: ignore[return-value]


def _config_from_file(path: Path):  # -> PreprocessConfig (import kept lazy)
    from gliodeploy.preprocessing.config import PreprocessConfig

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such preprocessing config file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("preprocessing"), dict):
        data = data["preprocessing"]  # a run's plans.json
    try:
        return PreprocessConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
