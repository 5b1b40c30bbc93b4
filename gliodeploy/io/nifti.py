"""NIfTI PET: SimpleITK for pixels and geometry, with the qform/sform cases ITK and nibabel disagree on.

ITK reads the qform whenever ``qform_code > 0``, while nibabel, FSL and SPM use the sform whenever
``sform_code > 0``. When both are set and differ, the same file would sit in two places depending on
the tool; we follow the sform (the NIfTI convention for "the" affine) when it is a rotation with
scaling, and refuse a sheared sform that disagrees with the qform rather than silently pick one.
A file with neither transform (both codes 0) has no orientation: refused too. NIfTI-2 files and
.hdr/.img pairs are not read by this SimpleITK build: a clear error. ITK's NIfTI reader also replaces
NaN voxels with 0 (measured with SimpleITK 2.5), so NaN outside the field of view cannot be detected
here; DICOM cannot store NaN.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError, SuvError
from gliodeploy.io.suv import (
    TimeLike,
    activity_to_bq,
    argument_fact,
    compute_suv_factor,
    concentration_scale,
    decay_seconds,
    derived_facts,
    fact,
    half_life_for,
)
from gliodeploy.io.volume import check_volume_bytes

#: Two geometries agree when the volume corners move by less than this (mm). The header strings
#: ITK exposes carry 6 significant digits, ~1e-3 mm at 100 mm from the origin.
AGREEMENT_TOLERANCE_MM = 0.01

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def _corners(size: tuple[int, ...]) -> np.ndarray:
    """The 8 corner voxel indices of a 3D grid, shape (8, 3)."""
    return np.array(
        [[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)], float
    )


def _sitk_affine_lps(image: sitk.Image) -> np.ndarray:
    """4x4 index -> LPS affine of a 3D SimpleITK image."""
    affine = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def _sform_lps(meta: dict[str, str], source: Path) -> np.ndarray:
    """The header's sform (RAS) as a 4x4 index -> LPS affine."""
    try:
        rows = [[float(v) for v in meta[f"srow_{axis}"].split()] for axis in "xyz"]
    except (KeyError, ValueError) as exc:
        raise InputError(f"{source}: sform_code is set but the srow_x/y/z rows cannot be read") from exc
    affine = np.eye(4)
    affine[:3, :] = _LPS_FROM_RAS @ np.array(rows)
    return affine


def _apply_affine(image: sitk.Image, affine: np.ndarray) -> None:
    """Set origin/spacing/direction from an index -> LPS affine that is a rotation times scaling."""
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    u, _, vt = np.linalg.svd(linear / spacing)  # nearest orthonormal matrix: drops 6-digit rounding
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (u @ vt).ravel()))
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))


def read_nifti(path: Path) -> tuple[sitk.Image, dict[str, Any]]:
    """Read a NIfTI-1 file into a SimpleITK image in LPS space, applying the policy above.

    Returns the image (3D or 4D as stored; scl_slope/scl_inter applied) and geometry facts for the
    metadata (``geometry_source``, codes). Unreadable files raise :class:`InputError`.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1]
        if "orthonormal" in detail:
            detail = "its qform/sform is sheared or singular (not a rotation with voxel sizes)"
        elif _is_nifti2(path):
            detail = "it is NIfTI-2, which this SimpleITK build cannot read; save it as NIfTI-1"
        raise InputError(f"{path}: cannot read NIfTI: {detail}") from exc
    meta = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    qcode, scode = int(meta.get("qform_code", "0")), int(meta.get("sform_code", "0"))
    if qcode == 0 and scode == 0:
        raise InputError(
            f"{path}: the NIfTI header has no orientation (qform_code and sform_code are both 0): "
            "rewrite it with the scanner's affine"
        )
    _check_payload(path)  # size limit, truncation, gzip bomb: all before ITK allocates the voxels
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read NIfTI pixels: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]  # a static volume stored with a singleton time axis
    info: dict[str, Any] = {
        "qform_code": qcode,
        "sform_code": scode,
        "geometry_source": "qform" if qcode else "sform",
    }
    if scode > 0 and qcode > 0 and image.GetDimension() in (3, 4):  # 2D: refused by check_volume
        spatial = image if image.GetDimension() == 3 else image[:, :, :, 0]
        sform = _sform_lps(meta, path)
        corners = np.c_[_corners(spatial.GetSize()), np.ones(8)]
        shift = float(np.abs(corners @ (sform - _sitk_affine_lps(spatial)).T).max())
        info["qform_sform_shift_mm"] = round(shift, 4)
        if shift > AGREEMENT_TOLERANCE_MM:
            linear = sform[:3, :3] / np.linalg.norm(sform[:3, :3], axis=0)
            if not np.allclose(linear.T @ linear, np.eye(3), atol=1e-4):
                raise InputError(
                    f"{path}: the sform is sheared and disagrees with the qform by up to {shift:.2f} mm; "
                    "SimpleITK cannot represent a shear: resample the image, or set sform_code to 0 to use "
                    "the qform"
                )
            if image.GetDimension() == 3:
                _apply_affine(image, sform)
            info["geometry_source"] = "sform"
    return image, info


#: NIfTI-1 ``datatype`` code -> bytes per voxel (nifti1.h).
NIFTI_DATATYPE_BYTES: dict[int, tuple[str, int]] = {
    2: ("uint8", 1),
    4: ("int16", 2),
    8: ("int32", 4),
    16: ("float32", 4),
    32: ("complex64", 8),
    64: ("float64", 8),
    128: ("rgb24", 3),
    256: ("int8", 1),
    512: ("uint16", 2),
    768: ("uint32", 4),
    1024: ("int64", 8),
    1280: ("uint64", 8),
    1536: ("float128", 16),
    1792: ("complex128", 16),
    2048: ("complex256", 32),
    2304: ("rgba32", 4),
}
#: Bytes a ``.nii.gz`` may decompress to beyond what its header announces before it is called a bomb:
#: real writers stop at the last voxel; the margin only tolerates odd padding.
GZIP_SLACK_BYTES = 1 << 20


def _check_payload(path: Path) -> None:
    """Refuse, before ITK allocates or reads any voxel, a NIfTI-1 file that is too large or inconsistent.

    From the 348-byte header alone: the voxel payload, prod(dim) x the datatype's size, must stay within
    :func:`~gliodeploy.io.volume.max_volume_bytes` (a header promising 2000^3 float32 voxels would
    otherwise make ITK try to allocate 32 GB). Then the file must hold the vox_offset + payload bytes
    the header announces: ITK reads a truncated file (an interrupted copy) without complaint and fills
    the missing voxels with 0. A ``.gz`` file is stream-decompressed with a byte cap, so a gzip bomb (a
    small file that inflates far beyond what its header promises) is refused after at most
    :data:`GZIP_SLACK_BYTES` more than the announced size, and a cut or corrupt stream is caught too.
    """
    import gzip
    import struct
    import zlib

    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            header = fh.read(348)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{path}: the file is truncated or corrupt ({exc})") from exc
    if len(header) < 348:
        raise InputError(f"{path}: the file is truncated: {len(header)} bytes, shorter than a NIfTI header")
    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    dim = struct.unpack(f"{order}8h", header[40:56])
    datatype, bitpix = struct.unpack(f"{order}hh", header[70:74])
    vox_offset = struct.unpack(f"{order}f", header[108:112])[0]
    n_dims = dim[0]
    if not 1 <= n_dims <= 7 or any(d < 0 for d in dim[1 : 1 + n_dims]):
        raise InputError(f"{path}: the NIfTI header has invalid dimensions {list(dim)}")
    if not np.isfinite(vox_offset) or vox_offset < 0:
        raise InputError(f"{path}: the NIfTI header has an invalid vox_offset {vox_offset!r}")
    sizes = [max(d, 1) for d in dim[1 : 1 + n_dims]]
    n_voxels = math.prod(sizes)  # Python ints: no overflow whatever the header says
    name, per_voxel = NIFTI_DATATYPE_BYTES.get(datatype, (f"datatype {datatype}", max(bitpix, 8) // 8))
    payload = n_voxels * max(per_voxel, bitpix // 8)
    check_volume_bytes(payload, path.name, f"{'x'.join(map(str, sizes))} {name} voxels, per its header")
    expected = max(int(vox_offset), 348) + payload
    try:
        if gz:
            cap = expected + GZIP_SLACK_BYTES
            with gzip.open(path, "rb") as fh:
                size = 0
                while chunk := fh.read(min(1 << 20, cap + 1 - size)):
                    size += len(chunk)
                    if size > cap:
                        raise InputError(
                            f"{path}: decompresses to more than the {expected} bytes its header announces "
                            f"(stopped after {size}): a corrupt file or a gzip bomb"
                        )
        else:
            size = path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{path}: the file is truncated or corrupt ({exc})") from exc
    if size < expected:
        raise InputError(
            f"{path}: the file is truncated: {size} of the {expected} bytes its header announces "
            "(interrupted copy or download?)"
        )


def _is_nifti2(path: Path) -> bool:
    """True when the header size field says NIfTI-2 (540), gzip or not (a 4-byte peek, no parsing)."""
    import gzip

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")


def _number(sidecar: dict[str, Any], key: str, where: str, hint: str) -> float | None:
    """A numeric sidecar field, ``None`` when absent or empty; a non-number is an :class:`SuvError`."""
    value = sidecar.get(key)
    if value is None or value == "" or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list):  # one-frame lists such as [1200] (dcm2niix)
        if len(value) != 1:
            raise SuvError(f"{key} in {where} has {len(value)} values: one static frame is expected")
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise SuvError(f"{key} in {where} is not a number: {value!r}; {hint}") from exc
    if not np.isfinite(number):
        raise SuvError(f"{key} in {where} is not finite: {value!r}; {hint}")
    return number


def _clock(time_zero: str, offset_s: float, where: str) -> time:
    """``TimeZero`` (HH:MM:SS) + seconds as a clock time (BIDS times are relative to TimeZero)."""
    try:
        zero = time.fromisoformat(str(time_zero).strip())
    except ValueError as exc:
        raise SuvError(f"TimeZero in {where} is not a clock time HH:MM:SS: {time_zero!r}") from exc
    return (datetime.combine(date(2000, 1, 1), zero) + timedelta(seconds=offset_s)).time()


def _tsv_source(name: str) -> str:
    """``sessions_tsv`` for a ``sub-X_sessions.tsv`` weight, else ``participants_tsv``."""
    return "sessions_tsv" if Path(name).name.endswith("_sessions.tsv") else "participants_tsv"


def bids_suv(
    sidecar: dict[str, Any],
    where: str,
    *,
    weight_kg: float | None,
    weight_source: str | None,
    injected_dose_bq: float | None,
    injection_time: TimeLike | None,
    scan_time: TimeLike | None,
    half_life_s: float | None,
    image_units: str | None,
) -> tuple[float, dict[str, Any]]:
    """SUVbw factor (image value -> SUVbw) from a BIDS-PET sidecar and explicit overrides.

    ``where`` names the sidecar in error messages. Returns the factor and what it was computed from,
    ``suv_facts`` included (each input's value and source, for the audit trail of predictions).
    """
    units = image_units if image_units is not None else sidecar.get("Units")
    if not units:
        raise SuvError(f"Units is missing in {where}: pass image_units (e.g. 'Bq/mL') or assume_suv")
    to_bqml = concentration_scale(str(units), field=f"Units in {where}")
    facts: dict[str, Any] = {
        "units": argument_fact("units", str(units))
        if image_units is not None
        else fact(str(units), "bids_sidecar", f"{where} Units")
    }
    info: dict[str, Any] = {"units_original": str(units), "suv_facts": facts}
    if to_bqml is None:  # the image already holds SUVbw (g/mL)
        facts["suv_factor"] = fact(1.0, "derived", "the image already holds SUVbw")
        return 1.0, info | {"suv_factor": 1.0}

    if injected_dose_bq is None:
        dose = _number(sidecar, "InjectedRadioactivity", where, "pass injected_dose_bq (--dose)")
        if dose is None:
            raise SuvError(
                f"InjectedRadioactivity is missing in {where}: pass injected_dose_bq (--dose) or assume_suv"
            )
        dose_units = sidecar.get("InjectedRadioactivityUnits")
        if not dose_units:
            raise SuvError(
                f"InjectedRadioactivityUnits is missing in {where} (MBq? mCi?): cannot read the dose"
            )
        injected_dose_bq = activity_to_bq(
            dose, str(dose_units), field=f"InjectedRadioactivityUnits in {where}"
        )
        info["dose_source"] = where
        facts["injected_dose_bq"] = fact(
            injected_dose_bq, "bids_sidecar", f"{where} InjectedRadioactivity ({dose:g} {dose_units})"
        )
    else:
        info["dose_source"] = "argument"
        facts["injected_dose_bq"] = argument_fact("injected_dose_bq", injected_dose_bq)
    if weight_kg is None:
        weight_kg = _number(sidecar, "PatientWeight", where, "pass weight_kg (--weight)")
        weight_source = where if weight_kg is not None else None
        if weight_kg is not None:
            facts["weight_kg"] = fact(weight_kg, "bids_sidecar", f"{where} PatientWeight")
    elif weight_source in (None, "argument"):
        facts["weight_kg"] = argument_fact("weight_kg", weight_kg)
    else:
        facts["weight_kg"] = fact(weight_kg, _tsv_source(weight_source), f"{weight_source} weight")
    if weight_kg is None:
        raise SuvError(
            f"the body weight is missing: no 'weight' in participants.tsv/sessions.tsv for this subject "
            f"and no PatientWeight in {where}: pass weight_kg (--weight KG) or assume_suv"
        )
    info["weight_source"] = weight_source or "argument"

    if half_life_s is not None:
        facts["half_life_s"] = argument_fact("half_life_s", half_life_s)
    else:
        half_life_s = _number(sidecar, "RadionuclideHalfLife", where, "pass half_life_s")
        if half_life_s is not None:
            facts["half_life_s"] = fact(half_life_s, "bids_sidecar", f"{where} RadionuclideHalfLife")
    if half_life_s is None:
        nuclide = sidecar.get("TracerRadionuclide")
        if not nuclide:
            raise SuvError(
                f"TracerRadionuclide is missing in {where}: cannot know the half-life (pass half_life_s)"
            )
        half_life_s = half_life_for(str(nuclide))
        info["radionuclide"] = str(nuclide)
        facts["half_life_s"] = fact(
            half_life_s, "bids_sidecar", f"{where} TracerRadionuclide {nuclide} (tabulated half-life)"
        )

    decay_time_s, time_facts = _bids_decay_time(sidecar, where, injection_time, scan_time)
    facts.update(time_facts)
    factor = to_bqml * compute_suv_factor(
        weight_kg=weight_kg,
        injected_dose_bq=injected_dose_bq,
        decay_time_s=decay_time_s,
        half_life_s=half_life_s,
    )
    facts.update(derived_facts(decay_time_s, half_life_s, factor))
    return factor, info | {
        "suv_factor": factor,
        "weight_kg": weight_kg,
        "injected_dose_bq": injected_dose_bq,
        "half_life_s": half_life_s,
        "decay_time_s": decay_time_s,
        "to_bqml": to_bqml,
    }


def _bids_decay_time(
    sidecar: dict[str, Any], where: str, injection_time: TimeLike | None, scan_time: TimeLike | None
) -> tuple[float, dict[str, Any]]:
    """Seconds from injection to the decay-correction reference, from the sidecar and/or explicit times,
    and the ``injection_time`` / ``scan_time`` facts (value and source) used.

    The explicit ``scan_time`` is the time the image values are decay-corrected to. BIDS times are
    seconds relative to ``TimeZero``: used as they are when both come from the sidecar, turned into clock
    times through ``TimeZero`` when mixed with an explicit time.
    """
    if scan_time is None:
        corrected = sidecar.get("ImageDecayCorrected")
        if corrected is None:
            raise SuvError(
                f"ImageDecayCorrected is missing in {where}: pass scan_time (the decay-correction time)"
            )
        if corrected is False or str(corrected).strip().lower() in {"false", "0", "no"}:
            raise SuvError(
                f"ImageDecayCorrected is false in {where}: SUV needs a decay-corrected image "
                "(decay-correct it, or pass assume_suv if it holds SUV already)"
            )
    hint = "pass injection_time and scan_time"
    inj_rel = None if injection_time is not None else _number(sidecar, "InjectionStart", where, hint)
    ref_rel = None if scan_time is not None else _number(sidecar, "ImageDecayCorrectionTime", where, hint)
    if injection_time is None and inj_rel is None:
        raise SuvError(
            f"InjectionStart is missing in {where}: pass injection_time (--injection-time) or assume_suv"
        )
    if scan_time is None and ref_rel is None:
        raise SuvError(f"ImageDecayCorrectionTime is missing in {where}: pass scan_time or assume_suv")
    time_zero = sidecar.get("TimeZero")
    facts = {
        "injection_time": _time_fact(
            "injection_time", injection_time, inj_rel, "InjectionStart", time_zero, where
        ),
        "scan_time": _time_fact(
            "scan_time", scan_time, ref_rel, "ImageDecayCorrectionTime", time_zero, where
        ),
    }
    if inj_rel is not None and ref_rel is not None:
        return ref_rel - inj_rel, facts
    if injection_time is not None and scan_time is not None:
        return decay_seconds(injection_time, scan_time), facts
    if not time_zero:
        raise SuvError(
            f"TimeZero is missing in {where}: needed to combine its relative times with an explicit "
            f"time; {hint}"
        )
    injection = injection_time if injection_time is not None else _clock(time_zero, inj_rel, where)
    reference = scan_time if scan_time is not None else _clock(time_zero, ref_rel, where)
    return decay_seconds(injection, reference), facts


def _time_fact(
    name: str, given: TimeLike | None, relative_s: float | None, key: str, time_zero: Any, where: str
) -> dict[str, Any]:
    """The fact for one time: the explicit value, else the sidecar's ``TimeZero + key`` as a clock time
    (or the bare offset when ``TimeZero`` is absent or unreadable)."""
    if given is not None:
        return argument_fact(name, given)
    detail = f"{where} {key} ({relative_s:g} s after TimeZero {time_zero or '(absent)'})"
    try:
        value: Any = _clock(time_zero, relative_s, where).isoformat() if time_zero else None
    except SuvError:
        value = None
    return fact(value if value is not None else f"TimeZero + {relative_s:g} s", "bids_sidecar", detail)
