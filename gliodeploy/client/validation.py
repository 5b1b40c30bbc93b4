"""Checks run on the client before anything is sent: a bad scan fails here with a clear message,
not as an opaque server error (or, worse, as a confident prediction on garbage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError

#: Plausible PET voxel sizes in mm. Clinical PET is 1-6 mm; outside this range the header is wrong
#: (e.g. metres written as millimetres) and resampling to 2 mm would silently produce nonsense.
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0


def check_values(array: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` if ``array`` is empty, holds NaN/Inf, or is constant."""
    if array.size == 0:
        raise InputError(f"{what}: the volume is empty (shape {tuple(array.shape)})")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise InputError(f"{what}: {bad} voxel(s) are NaN or infinite")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"{what}: the volume is constant (every voxel = {lo:g}); not a PET scan")


def check_native_image(image: sitk.Image, what: str) -> None:
    """Validate a native-space SUV image: 3D, one component, plausible spacing, usable values."""
    if image.GetDimension() != 3:
        raise InputError(
            f"{what}: expected a 3D static PET volume, got a {image.GetDimension()}D image of size "
            f"{image.GetSize()} (dynamic/4D series must be summed into one static frame first)"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()}")
    spacing = image.GetSpacing()
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputError(
            f"{what}: implausible voxel spacing {tuple(round(s, 4) for s in spacing)} mm "
            f"(expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm); check the file header"
        )
    check_values(sitk.GetArrayViewFromImage(image), what)


def check_grid_array(array: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
    """Validate an ``[x, y, z]`` SUV volume on the model grid and return it as C-contiguous float32.

    Also accepts ``[1, X, Y, Z]`` / ``[1, 1, X, Y, Z]`` (a batch of one), squeezed to ``[X, Y, Z]``.
    """
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InputError(f"{what}: expected a 3D [x, y, z] volume on the model grid, got shape {array.shape}")
    if tuple(array.shape) != tuple(shape):
        raise InputError(
            f"{what}: volume shape {tuple(array.shape)} does not match the model grid {tuple(shape)}; "
            "preprocess it with the model's preprocessing config (or use predict_file)"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{what}: expected numbers, got dtype {array.dtype}")
    check_values(array, what)
    return np.ascontiguousarray(array, dtype=np.float32)
