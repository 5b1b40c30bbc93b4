"""Grids in physical space: input checks, canonical orientation, IBSI-aligned grids, back to native.

Every grid built here has identity direction cosines (``LPS``, see
:data:`gliodeploy.preprocessing.config.ORIENTATION`), so its geometry is just origin + spacing + size,
and arrays on it are ``[x, y, z]`` = ``GetArrayFromImage(img).transpose(2, 1, 0)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.preprocessing.config import ORIENTATION

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


@dataclass(frozen=True)
class Grid:
    """An axis-aligned (LPS) voxel grid: ``origin`` = physical centre of voxel (0, 0, 0), in mm."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]

    @property
    def centre(self) -> np.ndarray:
        """Physical centre of the grid (mm)."""
        return np.asarray(self.origin) + (np.asarray(self.size) - 1) / 2 * np.asarray(self.spacing)

    def reference(self) -> sitk.Image:
        """An empty image carrying this geometry, for ``sitk.Resample``."""
        ref = sitk.Image([int(n) for n in self.size], sitk.sitkUInt8)
        ref.SetOrigin(tuple(float(o) for o in self.origin))
        ref.SetSpacing(tuple(float(s) for s in self.spacing))
        return ref


def interpolator(name: str | int) -> int:
    """SimpleITK interpolator constant for ``"linear"``, ``"bspline"`` or ``"nearest"`` (or a constant)."""
    if isinstance(name, int):
        return name
    if name not in _INTERPOLATORS:
        raise InputError(f"unknown interpolator {name!r}; choose one of {', '.join(_INTERPOLATORS)}")
    return _INTERPOLATORS[name]


def check_volume(image: sitk.Image, what: str = "PET volume") -> sitk.Image:
    """Validate a scalar 3D volume and return it as float32.

    Raises :class:`InputError` for another dimension, vector pixels, NaN/Inf, or an all-zero or
    constant volume (nothing to find a brain in).
    """
    if not isinstance(image, sitk.Image):
        raise InputError(f"{what}: expected a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(
            f"{what}: expected a 3D volume, got a {image.GetDimension()}D image of size {image.GetSize()}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()}")
    if min(image.GetSize()) < 2:
        raise InputError(f"{what}: a 3D volume needs >= 2 voxels per axis, got size {image.GetSize()}")
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if not finite.all():
        raise InputError(f"{what}: {int((~finite).sum())} voxel(s) are NaN or Inf")
    lo, hi = float(values.min()), float(values.max())
    if hi == 0 and lo == 0:
        raise InputError(f"{what}: every voxel is zero")
    if hi == lo:
        raise InputError(f"{what}: the volume is constant ({hi:g} everywhere)")
    if hi <= 0:
        raise InputError(f"{what}: no positive uptake (max {hi:g}); is this an SUV/activity image?")
    return image


def orient(image: sitk.Image) -> sitk.Image:
    """Reorder/flip axes so the direction is the closest to LPS (identity); lossless, no resampling.

    Physically identical scans given in flipped or permuted index order come out identical. An
    oblique direction keeps its residual rotation (handled later by resampling in physical space).
    """
    current = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    if current == ORIENTATION:
        return image
    return sitk.DICOMOrient(image, ORIENTATION)


def covering_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> Grid:
    """An LPS grid at ``spacing`` covering ``image``'s field of view, centred on the image centre.

    IBSI-style alignment: ``size = ceil(extent / spacing)`` with ``extent`` the physical extent of the
    voxel edges (``n * spacing`` for an axis-aligned image), both grids sharing their centre.
    """
    size = np.asarray(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
            for corner in itertools.product(*[(-0.5, n - 0.5) for n in size])
        ]
    )
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (size - 1) / 2]))
    extent = corners.max(axis=0) - corners.min(axis=0)
    new_spacing = np.asarray(spacing, dtype=float)
    # The tolerance keeps 400 x 1 mm -> 200 x 2 mm instead of 201 after float rounding.
    new_size = np.maximum(np.ceil(extent / new_spacing - 1e-6), 1).astype(int)
    origin = centre - (new_size - 1) / 2 * new_spacing
    return Grid(tuple(origin.tolist()), tuple(new_spacing.tolist()), tuple(int(n) for n in new_size))


def subgrid(parent: Grid, size: tuple[int, int, int], centre_mm: np.ndarray) -> Grid:
    """A ``size`` grid on ``parent``'s lattice (whole-voxel offset), centred as close to ``centre_mm``.

    Staying on the parent's lattice keeps the IBSI alignment; the grid centre lands within half a
    voxel of ``centre_mm`` on each axis.
    """
    spacing = np.asarray(parent.spacing)
    wanted = np.asarray(centre_mm, dtype=float) - (np.asarray(size) - 1) / 2 * spacing
    shift = np.round((wanted - np.asarray(parent.origin)) / spacing)
    origin = np.asarray(parent.origin) + shift * spacing
    return Grid(tuple(origin.tolist()), parent.spacing, tuple(int(n) for n in size))


def resample(image: sitk.Image, grid: Grid, interp: str | int = "linear") -> sitk.Image:
    """Resample ``image`` onto ``grid`` through physical space (zero outside), float32."""
    interp = interpolator(interp)
    if interp == sitk.sitkBSpline:
        # B-spline coefficients are computed over the whole input: crop it to what the grid needs.
        image = crop_to(image, grid, margin=4)
    return sitk.Resample(image, grid.reference(), sitk.Transform(), interp, 0.0, sitk.sitkFloat32)


def crop_to(image: sitk.Image, grid: Grid, margin: int) -> sitk.Image:
    """The part of ``image`` covering ``grid`` (plus ``margin`` voxels), in image index space."""
    corners = [
        np.asarray(grid.origin) + np.asarray(corner) * np.asarray(grid.spacing)
        for corner in itertools.product(*[(-0.5, n - 0.5) for n in grid.size])
    ]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(c.tolist()) for c in corners])
    size = np.asarray(image.GetSize())
    low = np.clip(np.floor(index.min(axis=0)).astype(int) - margin, 0, size - 1)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int) + margin, low, size - 1)
    return sitk.RegionOfInterest(image, (high - low + 1).tolist(), low.tolist())


def image_to_xyz(image: sitk.Image) -> np.ndarray:
    """The voxel values of a 3D image as a C-contiguous ``[x, y, z]`` array."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def to_grid_image(array_xyz: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """Wrap an ``[x, y, z]`` array as an image with ``grid``'s origin/spacing/direction."""
    array_xyz = np.asarray(array_xyz)
    if array_xyz.shape != tuple(grid.GetSize()):
        raise InputError(
            f"array of shape {array_xyz.shape} does not fit the grid of size "
            f"{tuple(grid.GetSize())} [x, y, z]"
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.CopyInformation(grid)
    return image


def to_native(
    map_xyz: np.ndarray, grid: sitk.Image, native: sitk.Image, interpolator_name: str | int = "linear"
) -> sitk.Image:
    """Bring a map on the model grid (e.g. Grad-CAM) back onto the native scan's voxel grid.

    The result has exactly ``native``'s size, spacing, origin and direction; the map is resampled
    through physical space and is 0 outside the model grid. ``interpolator_name`` is ``"linear"``
    (default), ``"nearest"`` (label maps: keeps their pixel type) or ``"bspline"``.
    """
    if not isinstance(native, sitk.Image) or native.GetDimension() != 3:
        raise InputError("to_native: the native image must be a 3D SimpleITK image")
    if grid.GetDimension() != 3:
        raise InputError("to_native: the grid must be a 3D SimpleITK image")
    interp = interpolator(interpolator_name)
    array_xyz = np.asarray(map_xyz)
    if interp != sitk.sitkNearestNeighbor or not np.issubdtype(array_xyz.dtype, np.integer):
        array_xyz = array_xyz.astype(np.float32)
    image = to_grid_image(array_xyz, grid)
    return sitk.Resample(image, native, sitk.Transform(), interp, 0, image.GetPixelID())


def voxel_volume_ml(spacing: tuple[float, ...]) -> float:
    """Volume of one voxel in mL."""
    return math.prod(spacing) / 1000.0
