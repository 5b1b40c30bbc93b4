"""The loaded PET volume and the checks every reader applies before handing it on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError

#: Voxel sizes outside this range (mm) mean a broken header (or metres / micrometres).
SPACING_RANGE_MM: tuple[float, float] = (0.1, 20.0)

#: Largest voxel payload (bytes) a scan may announce before its pixels are read: 1 GiB, ~4x a
#: whole-body PET at 2 mm in float32. Checked on the header (NIfTI: dimensions x datatype size; DICOM:
#: rows x columns x slices x 4 bytes of float32) so a broken or hostile header cannot make the reader
#: allocate tens of GB. Raise it with the environment variable ``GLIODEPLOY_MAX_VOLUME_BYTES``.
DEFAULT_MAX_VOLUME_BYTES = 1 << 30
MAX_VOLUME_BYTES_ENV = "GLIODEPLOY_MAX_VOLUME_BYTES"

#: ``PetVolume.units`` values.
UNITS_SUV = "SUVbw"
UNITS_UNKNOWN = "unknown"


@dataclass
class PetVolume:
    """A static 3D PET volume in LPS physical space.

    ``image`` is float32; it holds SUVbw when ``units == "SUVbw"``, or the file's values untouched when
    the caller asked for ``assume_suv`` (``units == "unknown"``). ``metadata`` records what the SUV was
    computed from (units before conversion, factor, weight, dose, times, and where each came from).
    """

    image: sitk.Image
    units: str
    subject: str | None
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def array_xyz(self) -> np.ndarray:
        """Voxel values as a float32 ``[x, y, z]`` array (the project's array convention)."""
        return sitk.GetArrayFromImage(self.image).transpose(2, 1, 0)


def max_volume_bytes() -> int:
    """The voxel payload limit: ``GLIODEPLOY_MAX_VOLUME_BYTES`` (bytes, e.g. ``4e9``) or 1 GiB."""
    text = os.environ.get(MAX_VOLUME_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOLUME_BYTES
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < 1:
        raise InputError(f"{MAX_VOLUME_BYTES_ENV}={text!r} is not a positive number of bytes")
    return int(value)


def _size_text(n_bytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def check_volume_bytes(n_bytes: int, what: str, detail: str) -> None:
    """Refuse, before any allocation, a volume whose header announces more than :func:`max_volume_bytes`.

    ``what`` starts the message (the file), ``detail`` says how the size was computed.
    """
    limit = max_volume_bytes()
    if n_bytes > limit:
        raise InputError(
            f"{what} announces {_size_text(n_bytes)} of voxels ({detail}), more than the "
            f"{_size_text(limit)} limit: a broken header, or set {MAX_VOLUME_BYTES_ENV} to allow it"
        )


def check_volume(image: sitk.Image, source: Path) -> sitk.Image:
    """Validate a freshly read image and return it as 3D float32.

    Rejects 4D (dynamic) and 2D data, implausible voxel sizes, NaN/inf and constant volumes with an
    :class:`InputError` that names ``source``. A trailing singleton 4th axis is dropped.
    """
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        dim, size = 3, image.GetSize()
    if dim == 4:
        raise InputError(
            f"{source}: 4D dynamic PET ({size[3]} frames of {size[0]}x{size[1]}x{size[2]}) is not supported: "
            "provide a static frame (e.g. the summed 10-30 min frame) as a 3D volume"
        )
    if dim != 3 or min(size) < 2:
        raise InputError(
            f"{source}: expected a 3D volume, got a {dim}D image of size {size} (a single slice?)"
        )
    spacing = image.GetSpacing()
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        raise InputError(
            f"{source}: voxel spacing {tuple(round(s, 4) for s in spacing)} mm is outside the plausible "
            f"{low}-{high} mm range (broken header?)"
        )
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise InputError(f"{source}: {bad} of {values.size} voxels are NaN or infinite")
    low_value, high_value = float(values.min()), float(values.max())
    if low_value == high_value:
        raise InputError(
            f"{source}: the image is constant (every voxel = {low_value:g}): empty or failed export?"
        )
    return image
