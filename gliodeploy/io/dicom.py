"""DICOM PET series: SimpleITK (GDCM) for pixels and geometry, pydicom for the SUV tags (QIBA rules).

SimpleITK applies each file's own RescaleSlope/Intercept only when the output pixel type is forced to
float: left to itself it picks the first slice's type, and a first slice with slope 1 turns the whole
series into int16 with the other slices' scaling truncated (measured: >100 % errors). We always force
float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from gliodeploy.errors import InputError, SuvError
from gliodeploy.io.suv import (
    TimeLike,
    argument_fact,
    compute_suv_factor,
    decay_seconds,
    derived_facts,
    fact,
)
from gliodeploy.io.volume import check_volume_bytes

log = logging.getLogger(__name__)

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
    #: how the series was chosen when its folder holds several (``None``: the only one, or asked for)
    choice: str | None = None


@dataclass(frozen=True)
class SeriesCandidate:
    """One series of a study folder, described from its first file, for the automatic choice."""

    uid: str
    description: str
    modality: str
    attenuation_corrected: bool
    static: bool
    original: bool
    n_files: int

    def describe(self) -> str:
        """``uid (description, modality, AC|NAC)`` for messages."""
        ac = "AC" if self.attenuation_corrected else "NAC"
        return f"{self.uid} ({self.description or 'no description'}, {self.modality or '?'}, {ac})"


def _candidate(folder: Path, uid: str) -> SeriesCandidate:
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    try:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    except (InvalidDicomError, OSError, IndexError) as exc:
        raise InputError(f"{folder}: cannot read a header of series {uid}: {exc}") from exc
    corrected = {str(v).strip().upper() for v in (ds.get("CorrectedImage") or [])}
    method = ds.get("AttenuationCorrectionMethod")
    image_type = {str(v).strip().upper() for v in (ds.get("ImageType") or [])}
    series_type = {str(v).strip().upper() for v in (ds.get("SeriesType") or [])}
    return SeriesCandidate(
        uid=uid,
        description=str(ds.get("SeriesDescription", "")).strip(),
        modality=str(ds.get("Modality", "")).strip().upper(),
        attenuation_corrected="ATTN" in corrected or bool(method and str(method).strip()),
        static=int(ds.get("NumberOfTimeSlices", 1) or 1) <= 1 and "DYNAMIC" not in series_type,
        original="DERIVED" not in image_type and "SECONDARY" not in image_type,
        n_files=len(files),
    )


#: The automatic choice among a study folder's series, in order; each rule keeps the candidates that
#: pass it when at least one does. PET first, then attenuation-corrected (the image SUV is defined
#: on), then the tie-breaks that only remove series a reader never means (dynamic, derived/secondary
#: images such as MIPs, single-file series).
CHOICE_RULES: tuple[tuple[str, Any], ...] = (
    ("PET (Modality PT)", lambda c: c.modality == "PT"),
    (
        "attenuation-corrected (CorrectedImage ATTN / AttenuationCorrectionMethod)",
        lambda c: c.attenuation_corrected,
    ),
    ("static (one time frame)", lambda c: c.static),
    ("ORIGINAL image type (not DERIVED/SECONDARY)", lambda c: c.original),
    ("more than one slice", lambda c: c.n_files > 1),
)


def choose_series(folder: Path, uids: list[str]) -> tuple[str, str]:
    """Pick the PET series to read among several in ``folder``: the UID and a sentence saying why.

    Applies :data:`CHOICE_RULES`; a folder without PET, or with several PET series the rules cannot
    separate, is an :class:`InputError` listing every candidate (UID, description, modality, AC).
    """
    candidates = [_candidate(folder, uid) for uid in uids]
    listing = "; ".join(c.describe() for c in candidates)
    if not any(c.modality == "PT" for c in candidates):
        raise InputError(f"{folder} holds {len(uids)} DICOM series and none is PET (PT): {listing}")
    remaining, reasons = candidates, []
    for name, rule in CHOICE_RULES:
        kept = [c for c in remaining if rule(c)]
        if kept and len(kept) < len(remaining):
            remaining, reasons = kept, [*reasons, name]
        if len(remaining) == 1:
            chosen = remaining[0]
            others = ", ".join(f"{c.modality or '?'} {c.uid}" for c in candidates if c is not chosen)
            why = (
                f"chose series {chosen.describe()} among {len(candidates)} in {folder}: "
                f"{'; '.join(reasons)} (others: {others})"
            )
            return chosen.uid, why
    raise InputError(
        f"{folder} holds {len(candidates)} DICOM series, of which {len(remaining)} PET series cannot be "
        "told apart automatically; choose one "
        f"with --series-uid (series_uid=): " + "; ".join(c.describe() for c in remaining)
    )


def find_series(path: Path, series_uid: str | None = None) -> DicomSeries:
    """Locate the PET series in a folder (or the series a given file belongs to) and read its headers.

    Several series in one folder (a PACS study export: PET with its CT, AC and NAC PET...): the
    ``series_uid`` given, else the series of the file given, else :func:`choose_series`, whose reason is
    kept in :attr:`DicomSeries.choice`.
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
    choice = None
    if series_uid is None:
        series_uid = uids[0]
        if len(uids) > 1:
            series_uid, choice = choose_series(folder, uids)
            log.info("%s", choice)
    elif series_uid not in uids:
        raise InputError(f"{folder}: no series {series_uid} (series found: {', '.join(uids)})")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except (InvalidDicomError, OSError) as exc:
        raise InputError(f"{folder}: cannot read a DICOM header: {exc}") from exc
    return DicomSeries(folder, series_uid, files, headers, choice)


def _drug(ds: pydicom.Dataset) -> pydicom.Dataset:
    drugs = ds.get("RadiopharmaceuticalInformationSequence") or []
    return drugs[0] if drugs else pydicom.Dataset()


def _numbers(value: Any) -> tuple[float, ...] | None:
    """A numeric (multi-)value as floats; ``None`` when absent or empty, a string when not numeric."""
    if value is None or value == "":
        return None
    values = value if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return (str(value),)  # type: ignore[return-value]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v).strip().upper() for v in value) or None
    return str(value).strip().upper() or None


#: Attributes every slice of a series must share: (name shown, reader of one header, kind, tolerance).
#: ``kind`` "number" compares within a relative tolerance, "text" exactly (case and padding ignored).
#: RescaleSlope/Intercept are deliberately absent: a per-slice slope is how PET keeps its precision.
GEOMETRY_FIELDS: tuple[tuple[str, Any, str, float], ...] = (
    ("ImageOrientationPatient (0020,0037)", lambda h: h.get("ImageOrientationPatient"), "number", 1e-4),
    ("PixelSpacing (0028,0030)", lambda h: h.get("PixelSpacing"), "number", 1e-5),
    ("Rows (0028,0010)", lambda h: h.get("Rows"), "number", 0.0),
    ("Columns (0028,0011)", lambda h: h.get("Columns"), "number", 0.0),
    ("Units (0054,1001)", lambda h: h.get("Units"), "text", 0.0),
)
#: SUV inputs, keyed by the explicit argument that replaces the tag (``None``: always read).
SUV_FIELDS: tuple[tuple[str | None, str, Any, str, float], ...] = (
    (None, "CorrectedImage (0028,0051)", lambda h: h.get("CorrectedImage"), "text", 0.0),
    (None, "DecayCorrection (0054,1102)", lambda h: h.get("DecayCorrection"), "text", 0.0),
    ("weight_kg", "PatientWeight (0010,1030)", lambda h: h.get("PatientWeight"), "number", 1e-6),
    (
        "injected_dose_bq",
        "RadionuclideTotalDose (0018,1074)",
        lambda h: _drug(h).get("RadionuclideTotalDose"),
        "number",
        1e-6,
    ),
    (
        "half_life_s",
        "RadionuclideHalfLife (0018,1075)",
        lambda h: _drug(h).get("RadionuclideHalfLife"),
        "number",
        1e-6,
    ),
    (
        "injection_time",
        "RadiopharmaceuticalStartDateTime (0018,1078)",
        lambda h: _drug(h).get("RadiopharmaceuticalStartDateTime"),
        "text",
        0.0,
    ),
    (
        "injection_time",
        "RadiopharmaceuticalStartTime (0018,1072)",
        lambda h: _drug(h).get("RadiopharmaceuticalStartTime"),
        "text",
        0.0,
    ),
    ("scan_time", "SeriesDate (0008,0021)", lambda h: h.get("SeriesDate"), "text", 0.0),
    ("scan_time", "SeriesTime (0008,0031)", lambda h: h.get("SeriesTime"), "text", 0.0),
)


def _same(a: Any, b: Any, kind: str, tolerance: float) -> bool:
    if a is None or b is None or kind == "text" or not all(isinstance(v, float) for v in (*a, *b)):
        return a == b
    return len(a) == len(b) and all(
        abs(x - y) <= tolerance * max(abs(x), abs(y), 1.0) for x, y in zip(a, b, strict=True)
    )


def _shown(value: Any, normalised: Any, kind: str) -> str:
    """How a slice's value reads in a message."""
    if normalised is None:
        return "missing"
    return repr(normalised if kind == "text" else str(value))


def check_consistency(
    series: DicomSeries, fields: Any, error: type[InputError] = InputError, hint: str = ""
) -> None:
    """Refuse a series whose slices disagree on one of ``fields`` (name, reader, kind, tolerance).

    The value most slices hold is the reference; the message names the field, the first differing
    slices (file name and InstanceNumber) and both values. A wrong PatientWeight on one slice once
    scaled every SUV of its series by 10: the first slice's value must not silently stand for all.
    """
    for name, read, kind, tolerance in fields:
        raw = [read(h) for h in series.headers]
        values = [(_numbers(v) if kind == "number" else _text(v)) for v in raw]
        counts: dict[Any, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        reference = max(counts, key=lambda v: (counts[v], v is not None))
        odd = [i for i, v in enumerate(values) if not _same(v, reference, kind, tolerance)]
        if not odd:
            continue
        listed = ", ".join(
            f"{Path(series.files[i]).name} (InstanceNumber {series.headers[i].get('InstanceNumber')}) has "
            + _shown(raw[i], values[i], kind)
            for i in odd[:3]
        ) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
        ref = values.index(reference)
        raise error(
            f"{series.folder}: {name} differs between the slices of series {series.uid}: {listed}, "
            f"the other {len(values) - len(odd)} slice(s) have {_shown(raw[ref], reference, kind)}; "
            f"a series must share it{hint}"
        )


def check_series(series: DicomSeries) -> None:
    """PET only, static (3D), complete, evenly spaced, one geometry, not too large; else an InputError."""
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
    check_consistency(series, GEOMETRY_FIELDS, hint=" (re-export the series from the scanner or PACS)")
    voxels = int(first.get("Rows", 0) or 0) * int(first.get("Columns", 0) or 0) * len(series.files)
    check_volume_bytes(voxels * 4, f"{series.folder}: the series", "float32")
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
    given = {
        "weight_kg": weight_kg,
        "injected_dose_bq": injected_dose_bq,
        "injection_time": injection_time,
        "scan_time": scan_time,
        "half_life_s": half_life_s,
    }
    check_consistency(
        series,
        [field[1:] for field in SUV_FIELDS if field[0] is None or given[field[0]] is None],
        SuvError,
        " (or give the value explicitly, e.g. --weight, instead of reading it from the slices)",
    )
    units = str(first.get("Units", "")).strip().upper()
    corrected = {str(v).strip().upper() for v in (first.get("CorrectedImage") or [])}
    facts: dict[str, Any] = {"units": fact(units or None, "dicom", "Units (0054,1001)")}
    info: dict[str, Any] = {
        "units_original": units or None,
        "corrected_image": sorted(corrected),
        "suv_facts": facts,
    }
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
        facts["suv_factor"] = fact(1.0, "derived", "the image already holds SUVbw (Units GML)")
        return np.ones(n), info | {"suv_factor": 1.0}
    if units == "CNTS":
        suv_scale = [_private_float(h, 0x7053, 0x00, PHILIPS_PET_CREATOR) for h in series.headers]
        if all(s is not None for s in suv_scale):
            facts["suv_factor"] = fact(
                float(np.mean(suv_scale)), "dicom", "Philips SUV scale factor (7053,1000), mean of the slices"
            )
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
        facts["weight_kg"] = fact(weight_kg, "dicom", "PatientWeight (0010,1030)")
    else:
        facts["weight_kg"] = argument_fact("weight_kg", weight_kg)
    drugs = first.get("RadiopharmaceuticalInformationSequence") or []
    drug = drugs[0] if drugs else pydicom.Dataset()
    if injected_dose_bq is None:
        dose = drug.get("RadionuclideTotalDose")
        injected_dose_bq = float(
            _required(dose, "RadionuclideTotalDose (0018,1074)", folder, hint.format("--dose"))
        )
        facts["injected_dose_bq"] = fact(injected_dose_bq, "dicom", "RadionuclideTotalDose (0018,1074)")
    else:
        facts["injected_dose_bq"] = argument_fact("injected_dose_bq", injected_dose_bq)
    if half_life_s is None:
        half_life_s = float(
            _required(
                drug.get("RadionuclideHalfLife"),
                "RadionuclideHalfLife (0018,1075)",
                folder,
                "pass half_life_s",
            )
        )
        facts["half_life_s"] = fact(half_life_s, "dicom", "RadionuclideHalfLife (0018,1075)")
    else:
        facts["half_life_s"] = argument_fact("half_life_s", half_life_s)
    if scan_time is None:
        scan_time, info["scan_time_source"] = scan_datetime(series)
        facts["scan_time"] = fact(scan_time, "dicom", info["scan_time_source"])
    else:
        facts["scan_time"] = argument_fact("scan_time", scan_time)
    given_injection = injection_time is not None
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
    facts["injection_time"] = (
        argument_fact("injection_time", injection_time)
        if given_injection
        else fact(injection_time, "dicom", info["injection_time_source"])
    )
    decay_time_s = decay_seconds(injection_time, scan_time)
    factor = compute_suv_factor(
        weight_kg=weight_kg,
        injected_dose_bq=injected_dose_bq,
        decay_time_s=decay_time_s,
        half_life_s=half_life_s,
    )
    facts.update(derived_facts(decay_time_s, half_life_s, float(np.mean(per_slice * factor))))
    if units == "CNTS":
        facts["to_bqml"] = fact(
            float(np.mean(per_slice)), "dicom", "Philips activity concentration scale (7053,1009)"
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
