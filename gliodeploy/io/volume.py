"""The loaded PET volume and the checks every reader applies before handing it on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError

#: Voxel sizes outside this range (mm) mean a broken header (or metres / micrometres).
SPACING_RANGE_MM: tuple[float, float] = (0.1, 20.0)

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
