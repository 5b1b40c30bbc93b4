"""``load_pet``: one entry point for NIfTI files and DICOM series, returning SUVbw volumes."""

from __future__ import annotations

import os
from datetime import datetime, time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.io import bids, dicom, nifti
from gliodeploy.io.suv import argument_fact, parse_time
from gliodeploy.io.volume import UNITS_SUV, UNITS_UNKNOWN, PetVolume, check_volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` file names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def load_pet(
    path: str | os.PathLike[str],
    *,
    weight_kg: float | None = None,
    injected_dose_bq: float | None = None,
    injection_time: str | datetime | time | None = None,
    scan_time: str | datetime | time | None = None,
    assume_suv: bool = False,
    participants_tsv: str | os.PathLike[str] | None = None,
    subject: str | None = None,
    series_uid: str | None = None,
    half_life_s: float | None = None,
    image_units: str | None = None,
) -> PetVolume:
    """Read a static PET scan and convert it to SUVbw.

    ``path`` is a NIfTI file (``.nii``/``.nii.gz``, with an optional BIDS-PET JSON sidecar and the
    dataset's ``participants.tsv``), a DICOM series folder, or one DICOM file (its series is read).
    Explicit arguments override the file's metadata: ``weight_kg``, ``injected_dose_bq``,
    ``injection_time`` and ``scan_time`` (the time the image is decay-corrected to; ISO date-times or
    ``HH:MM:SS`` clock times), ``half_life_s``, ``image_units`` (NIfTI without sidecar, e.g. "Bq/mL").
    ``assume_suv=True`` skips the conversion and returns the values untouched (``units="unknown"``).

    Raises :class:`~gliodeploy.errors.InputError` for unusable files (4D, 2D, NaN, not PET...) and
    :class:`~gliodeploy.errors.SuvError` when a value SUV needs is missing, zero or inconsistent.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    times = {
        "injection_time": parse_time(injection_time, field="injection_time"),
        "scan_time": parse_time(scan_time, field="scan_time"),
    }
    if is_nifti(path):
        tsv = Path(participants_tsv) if participants_tsv is not None else None
        return _load_nifti(
            path, weight_kg, injected_dose_bq, times, assume_suv, tsv, subject, half_life_s, image_units
        )
    if path.is_dir() or path.is_file():
        if path.is_file() and path.suffix.lower() in {
            ".hdr",
            ".img",
            ".mgz",
            ".mnc",
            ".nrrd",
            ".mha",
            ".json",
        }:
            raise InputError(
                f"{path}: unsupported file type; give a NIfTI (.nii/.nii.gz) file or a DICOM series"
            )
        return _load_dicom(
            path, weight_kg, injected_dose_bq, times, assume_suv, subject, series_uid, half_life_s
        )
    raise InputError(f"{path}: not a file or folder")


def _load_nifti(
    path: Path,
    weight_kg: float | None,
    injected_dose_bq: float | None,
    times: dict,
    assume_suv: bool,
    participants_tsv: Path | None,
    subject: str | None,
    half_life_s: float | None,
    image_units: str | None,
) -> PetVolume:
    image, geometry = nifti.read_nifti(path)
    image = check_volume(image, path)
    sidecar_path = bids.find_sidecar(path)
    sidecar = bids.read_json(sidecar_path) if sidecar_path else {}
    modality = sidecar.get("Modality", "PT")
    if str(modality).upper() not in {"PT", "PET"}:
        raise InputError(f"{sidecar_path}: Modality is {modality!r}, not PET")
    subject = subject or bids.entity(path, "sub")
    metadata = {
        "format": "nifti",
        "modality": "PT",
        "manufacturer": sidecar.get("Manufacturer"),
        "model": sidecar.get("ManufacturersModelName"),
        "tracer": sidecar.get("TracerName"),
        "sidecar": str(sidecar_path) if sidecar_path else None,
        **geometry,
    }
    if assume_suv:
        units = image_units or sidecar.get("Units")
        facts = {"assume_suv": argument_fact("assume_suv", True)}
        return PetVolume(
            image,
            UNITS_UNKNOWN,
            subject,
            path,
            metadata | {"units_original": units, "suv_factor": None, "suv_facts": facts},
        )
    where = (
        str(sidecar_path)
        if sidecar_path
        else f"(no BIDS sidecar {bids.nifti_stem(path)}.json next to {path})"
    )
    weight_source = "argument" if weight_kg is not None else None
    if weight_kg is None:
        weight_kg, weight_source = bids.bids_weight(path, subject, participants_tsv)
    factor, suv_info = nifti.bids_suv(
        sidecar,
        where,
        weight_kg=weight_kg,
        weight_source=weight_source,
        injected_dose_bq=injected_dose_bq,
        injection_time=times["injection_time"],
        scan_time=times["scan_time"],
        half_life_s=half_life_s,
        image_units=image_units,
    )
    return PetVolume(image * factor, UNITS_SUV, subject, path, metadata | suv_info)


def _load_dicom(
    path: Path,
    weight_kg: float | None,
    injected_dose_bq: float | None,
    times: dict,
    assume_suv: bool,
    subject: str | None,
    series_uid: str | None,
    half_life_s: float | None,
) -> PetVolume:
    series = dicom.find_series(path, series_uid)
    dicom.check_series(series)
    image = check_volume(dicom.read_series_image(series), series.folder)
    first = series.headers[0]
    metadata = {
        "format": "dicom",
        "modality": "PT",
        "manufacturer": str(first.get("Manufacturer", "")) or None,
        "model": str(first.get("ManufacturerModelName", "")) or None,
        "series_uid": series.uid,
        "series_description": str(first.get("SeriesDescription", "")).strip() or None,
        "series_choice": series.choice,  # why this series, when its folder holds several
        "n_files": len(series.files),
        "files": list(series.files),  # the slice files read, in slice order (for the input digest)
    }
    subject = subject or (str(first.get("PatientID", "")) or None)
    if assume_suv:
        units = str(first.get("Units", "")) or None
        facts = {"assume_suv": argument_fact("assume_suv", True)}
        return PetVolume(
            image,
            UNITS_UNKNOWN,
            subject,
            series.folder,
            metadata | {"units_original": units, "suv_facts": facts},
        )
    per_slice, suv_info = dicom.dicom_suv(
        series,
        weight_kg=weight_kg,
        injected_dose_bq=injected_dose_bq,
        injection_time=times["injection_time"],
        scan_time=times["scan_time"],
        half_life_s=half_life_s,
    )
    values = sitk.GetArrayFromImage(image) * per_slice.astype(np.float32)[:, None, None]
    suv = sitk.GetImageFromArray(values.astype(np.float32))
    suv.CopyInformation(image)
    return PetVolume(suv, UNITS_SUV, subject, series.folder, metadata | suv_info)
