"""Write a 3D volume as a real multi-file PET DICOM series (PET Image Storage, one slice per file).

Used by the tests and by the synthetic cohort generator to produce scans the DICOM reader must handle
as it would a scanner's: int16 pixels with a per-slice RescaleSlope (so each slice keeps ~15 bits of
precision), full geometry (ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing), and
the SUV attributes (Units, CorrectedImage, DecayCorrection, PatientWeight, radiopharmaceutical
sequence, optionally Philips' private scale factors).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from gliodeploy.errors import InputError
from gliodeploy.utils.atomic import atomic_path

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
PHILIPS_PET_CREATOR = "Philips PET Private Group"
#: (7053,1000) SUV scale factor and (7053,1009) activity-concentration scale factor (offsets in the block).
PHILIPS_SUV_FACTOR_ELEMENT = 0x00
PHILIPS_ACTIVITY_SCALE_ELEMENT = 0x09
UNITS = ("BQML", "CNTS", "GML")


def _da(value: datetime) -> str:
    return value.strftime("%Y%m%d")


def _tm(value: datetime) -> str:
    return value.strftime("%H%M%S.%f")


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) holding ``value`` as exactly as fits."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise InputError(f"cannot write {value!r} as a DICOM decimal string")


def _slice_scaling(plane: np.ndarray) -> tuple[np.ndarray, float]:
    """int16 pixels and the RescaleSlope that maps them back to ``plane`` (intercept 0)."""
    peak = float(np.abs(plane).max())
    slope = float(_ds(peak / 32767.0)) if peak > 0 else 1.0
    pixels = np.clip(np.rint(plane / slope), -32768, 32767).astype(np.int16)
    return pixels, slope


def write_pet_dicom_series(
    image_bqml: sitk.Image,
    out_dir: str | Path,
    *,
    units: str = "BQML",
    weight_kg: float | None,
    injected_dose_bq: float | None,
    injection_datetime: datetime,
    series_datetime: datetime,
    acquisition_datetime: datetime | None = None,
    half_life_s: float = 6586.2,
    write_start_datetime: bool = True,
    corrected_image: Sequence[str] = ("NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"),
    decay_correction: str = "START",
    modality: str = "PT",
    manufacturer: str = "SIEMENS",
    model_name: str = "Biograph mCT",
    philips_suv_factor: float | None = None,
    philips_activity_scale: float | None = None,
    patient_id: str = "ANON",
    patient_name: str = "Anonymous",
    series_description: str = "FDOPA static brain",
    series_number: int = 1,
    frame_duration_s: float = 1200.0,
    uid_seed: str | None = None,
) -> Path:
    """Write ``image_bqml`` as a PET DICOM series into the new folder ``out_dir`` (atomically).

    Image values are Bq/mL for ``units="BQML"`` and ``"CNTS"`` (stored as counts = Bq/mL divided by
    ``philips_activity_scale``, written as (7053,1009); ``philips_suv_factor`` is written as (7053,1000)
    as given), and SUVbw for ``"GML"``. ``acquisition_datetime`` defaults to ``series_datetime``; give a
    later ``series_datetime`` to mimic a post-processed series. ``write_start_datetime=False`` leaves
    out RadiopharmaceuticalStartDateTime so readers must use the clock-only start time. ``None`` for
    weight or dose leaves the attribute out. ``uid_seed`` makes the UIDs reproducible.
    Returns ``out_dir``; raises :class:`InputError` if it exists or the arguments are inconsistent.
    """
    out_dir = Path(out_dir)
    if units not in UNITS:
        raise InputError(f"units must be one of {UNITS}, got {units!r}")
    if image_bqml.GetDimension() != 3:
        raise InputError(f"a PET series is written from a 3D image, got {image_bqml.GetDimension()}D")
    if units == "CNTS" and not philips_activity_scale:
        raise InputError("units='CNTS' needs philips_activity_scale (Bq/mL per count)")
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists: the DICOM series is written into a new folder")
    acquisition_datetime = acquisition_datetime or series_datetime

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *map(str, parts)]) if uid_seed else generate_uid()

    values = sitk.GetArrayFromImage(image_bqml).astype(np.float64)  # [z, y, x]
    if units == "CNTS":
        values = values / philips_activity_scale
    direction = np.array(image_bqml.GetDirection()).reshape(3, 3)
    spacing = image_bqml.GetSpacing()
    study_uid, series_uid, frame_uid = (
        uid("study", patient_id),
        uid("series", patient_id, series_number),
        uid("for"),
    )

    base = Dataset()
    base.SOPClassUID = PET_IMAGE_STORAGE
    base.Modality = modality
    base.Manufacturer = manufacturer
    base.ManufacturerModelName = model_name
    base.PatientName = patient_name
    base.PatientID = patient_id
    if weight_kg is not None:
        base.PatientWeight = _ds(weight_kg)
    base.StudyInstanceUID, base.SeriesInstanceUID, base.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    base.StudyID, base.SeriesNumber, base.SeriesDescription = "1", series_number, series_description
    base.StudyDate, base.StudyTime = _da(acquisition_datetime), _tm(acquisition_datetime)
    base.SeriesDate, base.SeriesTime = _da(series_datetime), _tm(series_datetime)
    base.AcquisitionDate, base.AcquisitionTime = _da(acquisition_datetime), _tm(acquisition_datetime)
    base.ContentDate, base.ContentTime = _da(series_datetime), _tm(series_datetime)
    base.SeriesType = ["STATIC", "IMAGE"]
    base.Units = units
    base.CountsSource = "EMISSION"
    base.CorrectedImage = list(corrected_image)
    base.DecayCorrection = decay_correction
    base.ActualFrameDuration = int(round(frame_duration_s * 1000))
    base.NumberOfSlices = image_bqml.GetSize()[2]
    base.NumberOfTimeSlices = 1
    base.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    base.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (y), column spacing (x)
    base.SliceThickness = _ds(spacing[2])
    base.SamplesPerPixel, base.PhotometricInterpretation = 1, "MONOCHROME2"
    base.Rows, base.Columns = image_bqml.GetSize()[1], image_bqml.GetSize()[0]
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 1
    base.RescaleIntercept = "0"
    base.RescaleType = "BQML" if units == "CNTS" else units

    nuclide = Dataset()
    nuclide.CodeValue, nuclide.CodingSchemeDesignator, nuclide.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
    drug = Dataset()
    drug.Radiopharmaceutical = "Fluorodopa F^18^"
    drug.RadiopharmaceuticalStartTime = _tm(injection_datetime)
    if write_start_datetime:
        drug.RadiopharmaceuticalStartDateTime = injection_datetime.strftime("%Y%m%d%H%M%S.%f")
    if injected_dose_bq is not None:
        drug.RadionuclideTotalDose = _ds(injected_dose_bq)
    drug.RadionuclideHalfLife = _ds(half_life_s)
    drug.RadionuclidePositronFraction = "0.9686"
    drug.RadionuclideCodeSequence = DicomSequence([nuclide])
    base.RadiopharmaceuticalInformationSequence = DicomSequence([drug])

    with atomic_path(out_dir, is_dir=True) as tmp:
        for k in range(values.shape[0]):
            pixels, slope = _slice_scaling(values[k])
            ds = Dataset()
            ds.update(base)
            ds.SOPInstanceUID = uid("instance", patient_id, series_number, k)
            ds.InstanceNumber = k + 1
            ds.ImageIndex = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in image_bqml.TransformIndexToPhysicalPoint((0, 0, k))]
            ds.RescaleSlope = _ds(slope)
            if units == "CNTS" or philips_suv_factor is not None:
                block = ds.private_block(0x7053, PHILIPS_PET_CREATOR, create=True)
                if philips_suv_factor is not None:
                    block.add_new(PHILIPS_SUV_FACTOR_ELEMENT, "DS", _ds(philips_suv_factor))
                if philips_activity_scale is not None:
                    block.add_new(PHILIPS_ACTIVITY_SCALE_ELEMENT, "DS", _ds(philips_activity_scale))
            ds.PixelData = pixels.astype("<i2").tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            ds.save_as(tmp / f"IM_{k + 1:04d}.dcm", enforce_file_format=True)
    return out_dir
