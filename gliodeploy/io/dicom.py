"""DICOM PET series: SimpleITK (GDCM) for pixels and geometry, pydicom for the SUV tags (QIBA rules).

SimpleITK applies each file's own RescaleSlope/Intercept only when the output pixel type is forced to
float: left to itself it picks the first slice's type, and a first slice with slope 1 turns the whole
series into int16 with the other slices' scaling truncated (measured: >100 % errors). We always force
float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from gliodeploy.errors import InputError, SuvError
from gliodeploy.io.suv import TimeLike, compute_suv_factor, decay_seconds

PHILIPS_PET_CREATOR = "Philips PET Private Group"
GE_PET_CREATOR = "GEMS_PETD_01"
ENHANCED_PET_STORAGE = "1.2.840.10008.5.1.4.1.1.130"


@dataclass(frozen=True)
class DicomSeries:
    """One PET series: its folder, UID, files in slice order and their headers (no pixels)."""

    folder: Path
    uid: str
    files: list[str]
    headers: list[pydicom.Dataset]


def find_series(path: Path, series_uid: str | None = None) -> DicomSeries:
    """Locate the PET series in a folder (or the series a given file belongs to) and read its headers.

    Several series in one folder are an :class:`InputError` listing their UIDs unless ``series_uid``
    (or a file of the series) picks one.
    """
    folder = path.parent if path.is_file() else path
    if path.is_file() and series_uid is None:
        try:
            series_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        except (InvalidDicomError, AttributeError, OSError) as exc:
            raise InputError(f"{path}: not a DICOM image file with a SeriesInstanceUID ({exc})") from exc
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise InputError(f"{folder}: no DICOM image series found")
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(
                f"{folder} holds {len(uids)} DICOM series; choose one (series_uid= or a file of it): "
                + ", ".join(uids)
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"{folder}: no series {series_uid} (series found: {', '.join(uids)})")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except (InvalidDicomError, OSError) as exc:
        raise InputError(f"{folder}: cannot read a DICOM header: {exc}") from exc
    return DicomSeries(folder, series_uid, files, headers)


def check_series(series: DicomSeries) -> None:
    """PET only, static (3D), complete and evenly spaced; else an :class:`InputError` naming the problem."""
    first = series.headers[0]
    modalities = sorted({str(h.get("Modality", "")) for h in series.headers})
    if modalities != ["PT"]:
        raise InputError(
            f"{series.folder}: series {series.uid} is modality {'/'.join(modalities)}, not PET (PT)"
        )
    if (
        str(first.get("SOPClassUID", "")) == ENHANCED_PET_STORAGE
        or int(first.get("NumberOfFrames", 1) or 1) > 1
    ):
        raise InputError(
            f"{series.folder}: multi-frame (enhanced) PET files are not supported; export legacy PET"
        )
    frames = int(first.get("NumberOfTimeSlices", 1) or 1)
    positions = np.array(
        [[float(v) for v in h.get("ImagePositionPatient", [0, 0, 0])] for h in series.headers]
    )
    unique = len(np.unique(np.round(positions, 2), axis=0))
    if frames > 1 or unique < len(series.files):
        frames = max(frames, round(len(series.files) / max(unique, 1)))
        raise InputError(
            f"{series.folder}: 4D dynamic PET ({frames} frames) is not supported: provide a static frame "
            "(e.g. the summed 10-30 min frame) as its own series"
        )
    if len(series.files) < 2:
        raise InputError(f"{series.folder}: the series has a single slice (2D); a 3D volume is needed")
    expected = first.get("NumberOfSlices")
    if expected and int(expected) != len(series.files):
        raise InputError(
            f"{series.folder}: incomplete series: {len(series.files)} of {int(expected)} slices present"
        )
    orientation = np.array([float(v) for v in first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
    normal = np.cross(orientation[:3], orientation[3:])
    gaps = np.diff(np.sort(positions @ normal))
    if gaps.min() <= 0 or (gaps.max() - gaps.min()) > 0.01 * np.median(gaps) + 1e-3:
        raise InputError(
            f"{series.folder}: uneven slice spacing ({gaps.min():.3f}-{gaps.max():.3f} mm): missing slices?"
        )


def read_series_image(series: DicomSeries) -> sitk.Image:
    """Pixels as float32 with every slice's own rescale applied, geometry from GDCM."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{series.folder}: cannot read the pixel data: {str(exc).strip().splitlines()[-1]}"
        ) from exc


def _dicom_datetime(day: Any, clock: Any) -> datetime | None:
    """DA + TM strings -> datetime (``None`` when either is missing or empty)."""
    if not day or not clock:
        return None
    return _parse_dt(f"{str(day).strip()}{str(clock).strip()}")


def _parse_dt(text: str) -> datetime | None:
    """A DICOM DT string (YYYYMMDDHHMMSS[.ffffff], timezone suffix ignored) -> datetime."""
    text = text.strip().split("+")[0].split("-")[0]
    if not text:
        return None
    main, _, frac = text.partition(".")
    main = main.ljust(14, "0")
    try:
        value = datetime.strptime(main[:14], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise SuvError(f"cannot parse DICOM date-time {text!r}") from exc
    return value.replace(microsecond=int((frac + "000000")[:6])) if frac else value


def _private_float(ds: pydicom.Dataset, group: int, offset: int, creator: str) -> float | None:
    """A numeric private element (by creator, so the block number does not matter); ``None`` if absent/0."""
    try:
        element = ds.get_private_item(group, offset, creator)
    except KeyError:
        return None
    value = element.value
    if isinstance(value, bytes):  # implicit VR without a private dictionary entry
        value = value.decode("ascii", "ignore").strip("\x00 ")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number != 0 else None


def _private_dt(ds: pydicom.Dataset, group: int, offset: int, creator: str) -> datetime | None:
    try:
        value = ds.get_private_item(group, offset, creator).value
    except KeyError:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    return _parse_dt(str(value)) if value else None


def _required(value: Any, tag: str, folder: Path, hint: str) -> Any:
    if value is None or value == "" or (not isinstance(value, str) and value == 0):
        state = "missing" if value is None or value == "" else "zero"
        raise SuvError(f"{tag} is {state} in {folder}: {hint}")
    return value


def scan_datetime(series: DicomSeries) -> tuple[datetime, str]:
    """The time the image is decay-corrected to (DecayCorrection START), and which tag gave it.

    Series date/time, unless it is later than the earliest acquisition (a post-processed series):
    then GE's private scan date-time (0009,100D) if present, else the earliest AcquisitionDate/Time.
    """
    first = series.headers[0]
    series_dt = _dicom_datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    series_dt = _required(
        series_dt, "SeriesDate/SeriesTime (0008,0021/0031)", series.folder, "pass scan_time"
    )
    acquisitions = [
        _dicom_datetime(h.get("AcquisitionDate"), h.get("AcquisitionTime")) for h in series.headers
    ]
    acquisitions = [a for a in acquisitions if a is not None]
    if not acquisitions or series_dt <= min(acquisitions):
        return series_dt, "SeriesDate/SeriesTime"
    ge_scan = _private_dt(first, 0x0009, 0x0D, GE_PET_CREATOR)
    if ge_scan is not None:
        return ge_scan, "GE private scan date-time (0009,100D)"
    return min(acquisitions), "earliest AcquisitionDate/AcquisitionTime (post-processed series)"


def dicom_suv(
    series: DicomSeries,
    *,
    weight_kg: float | None,
    injected_dose_bq: float | None,
    injection_time: TimeLike | None,
    scan_time: TimeLike | None,
    half_life_s: float | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-slice factors (in GDCM's slice order) turning the rescaled pixels into SUVbw, and the facts used.

    QIBA vendor-neutral rules: CorrectedImage must hold ATTN and DECY and DecayCorrection be START;
    Units BQML -> SUV formula; CNTS -> Philips (7053,1000) SUV factor, else (7053,1009) to Bq/mL then
    the formula; GML -> already SUV. Explicit arguments replace the matching tags.
    """
    first, folder = series.headers[0], series.folder
    units = str(first.get("Units", "")).strip().upper()
    corrected = {str(v).strip().upper() for v in (first.get("CorrectedImage") or [])}
    info: dict[str, Any] = {"units_original": units or None, "corrected_image": sorted(corrected)}
    missing = {"ATTN", "DECY"} - corrected
    if missing:
        raise SuvError(
            f"CorrectedImage (0028,0051) in {folder} lacks {'/'.join(sorted(missing))} "
            f"({'/'.join(sorted(corrected)) or 'empty'}): SUV needs attenuation- and decay-corrected images"
        )
    decay_ref = str(first.get("DecayCorrection", "")).strip().upper()
    if decay_ref != "START":
        raise SuvError(f"DecayCorrection (0054,1102) in {folder} is {decay_ref or 'missing'!r}, not START")
    n = len(series.headers)
    if units == "GML":
        return np.ones(n), info | {"suv_factor": 1.0}
    if units == "CNTS":
        suv_scale = [_private_float(h, 0x7053, 0x00, PHILIPS_PET_CREATOR) for h in series.headers]
        if all(s is not None for s in suv_scale):
            return np.array(suv_scale, float), info | {
                "suv_factor": float(np.mean(suv_scale)),
                "suv_source": "(7053,1000)",
            }
        to_bqml = [_private_float(h, 0x7053, 0x09, PHILIPS_PET_CREATOR) for h in series.headers]
        if not all(s is not None for s in to_bqml):
            raise SuvError(
                f"Units CNTS in {folder} without Philips SUV scale factor (7053,1000) or activity "
                "concentration scale factor (7053,1009) on every slice: counts cannot be converted"
            )
        per_slice = np.array(to_bqml, float)
        info["suv_source"] = "(7053,1009) x formula"
    elif units == "BQML":
        per_slice = np.ones(n)
    else:
        raise SuvError(f"Units (0054,1001) in {folder} is {units or 'missing'!r}: expected BQML, CNTS or GML")

    hint = "pass {} or assume_suv"
    if weight_kg is None:
        weight_kg = float(
            _required(
                first.get("PatientWeight"), "PatientWeight (0010,1030)", folder, hint.format("--weight KG")
            )
        )
        info["weight_source"] = "PatientWeight (0010,1030)"
    drugs = first.get("RadiopharmaceuticalInformationSequence") or []
    drug = drugs[0] if drugs else pydicom.Dataset()
    if injected_dose_bq is None:
        dose = drug.get("RadionuclideTotalDose")
        injected_dose_bq = float(
            _required(dose, "RadionuclideTotalDose (0018,1074)", folder, hint.format("--dose"))
        )
    if half_life_s is None:
        half_life_s = float(
            _required(
                drug.get("RadionuclideHalfLife"),
                "RadionuclideHalfLife (0018,1075)",
                folder,
                "pass half_life_s",
            )
        )
    if scan_time is None:
        scan_time, info["scan_time_source"] = scan_datetime(series)
    if injection_time is None:
        start_dt = drug.get("RadiopharmaceuticalStartDateTime")
        if start_dt:
            injection_time = _parse_dt(str(start_dt))
            info["injection_time_source"] = "RadiopharmaceuticalStartDateTime (0018,1078)"
        else:
            clock = _required(
                drug.get("RadiopharmaceuticalStartTime"),
                "RadiopharmaceuticalStartTime (0018,1072)",
                folder,
                hint.format("--injection-time"),
            )
            injection_time = _dicom_datetime(
                "20000101", clock
            ).time()  # the date comes from the scan (midnight rule)
            info["injection_time_source"] = "RadiopharmaceuticalStartTime (0018,1072) + scan date"
    decay_time_s = decay_seconds(injection_time, scan_time)
    factor = compute_suv_factor(
        weight_kg=weight_kg,
        injected_dose_bq=injected_dose_bq,
        decay_time_s=decay_time_s,
        half_life_s=half_life_s,
    )
    return per_slice * factor, info | {
        "suv_factor": float(np.mean(per_slice * factor)),
        "weight_kg": weight_kg,
        "injected_dose_bq": injected_dose_bq,
        "half_life_s": half_life_s,
        "decay_time_s": decay_time_s,
        "injection_time": injection_time.isoformat(),
        "scan_time": scan_time.isoformat(),
    }
