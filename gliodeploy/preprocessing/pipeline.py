"""Native SUV volume -> brain-masked SUV on the model grid (the one implementation everyone uses).

Order of operations, and why:

1. check + orient: reject unusable volumes; flip/permute axes to LPS (lossless), so physically
   identical scans stored in another index order give identical results.
2. brain mask on a coarse ``cfg.mask_spacing`` copy covering the whole field of view (cheap, and the
   same mask whatever the model grid's spacing).
3. model grid: ``cfg.shape`` voxels at ``cfg.spacing``, LPS, on the IBSI lattice of the whole field of
   view (a grid centred on the scan's centre) and shifted by whole voxels to centre the brain's
   centre of mass.
4. one interpolation of the SUV values straight onto the model grid; negative values (OSEM noise,
   B-spline overshoot) become 0; everything outside the brain mask becomes 0.

A brain larger than the model's field of view loses its edges: up to ``cfg.max_brain_cut`` of its
volume this only warns (it is usually face/neck kept by the mask), beyond it raises InputError.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.preprocessing import geometry
from gliodeploy.preprocessing.config import PreprocessConfig
from gliodeploy.preprocessing.mask import brain_mask


@dataclass
class Preprocessed:
    """A scan on the model grid.

    ``array``: float32 ``[x, y, z]`` brain-masked SUV (not normalised; models normalise in-graph).
    ``mask``: uint8 ``[x, y, z]`` brain mask. ``grid``: float32 image with the model grid's geometry and
    ``array`` as values (write it with ``sitk.WriteImage`` for QC; pass it to :func:`to_native`).
    ``brain_centre_mm``: the mask's centre of mass (LPS, mm). ``brain_volume_ml``: mask volume on the
    coarse mask grid. ``brain_cut``: fraction of that volume outside the model grid.
    ``timings``: seconds per step.
    """

    array: np.ndarray
    mask: np.ndarray
    grid: sitk.Image
    brain_centre_mm: tuple[float, float, float]
    brain_volume_ml: float
    brain_cut: float
    timings: dict[str, float] = field(default_factory=dict)


log = logging.getLogger(__name__)

#: Share of the brain mask cut by the model grid above which preprocess() warns (Preprocessed.brain_cut
#: always records it; above cfg.max_brain_cut it is an error).
WARN_BRAIN_CUT = 0.01


def preprocess(image: sitk.Image, cfg: PreprocessConfig | None = None) -> Preprocessed:
    """Orient, mask, centre and resample a native SUV volume onto the model grid of ``cfg``.

    Raises :class:`InputError` for a non-3D, non-scalar, NaN/Inf, all-zero or constant volume, an
    empty brain mask, or a brain cut by more than ``cfg.max_brain_cut`` by the model grid.
    """
    cfg = cfg or PreprocessConfig()
    timings: dict[str, float] = {}
    start = tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[name] = now - tick
        tick = now

    image = geometry.orient(geometry.check_volume(image))
    lap("check_orient")

    mask_spacing = (cfg.mask_spacing,) * 3
    coarse_grid = geometry.covering_grid(image, mask_spacing)
    coarse_mask = brain_mask(geometry.resample(image, coarse_grid, "linear"), cfg)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(coarse_mask)
    centre = np.asarray(stats.GetCentroid(1))
    lap("mask")

    lattice = geometry.covering_grid(image, cfg.spacing)
    grid = geometry.subgrid(lattice, cfg.shape, centre)
    mask_xyz = geometry.image_to_xyz(coarse_mask)
    brain_voxels = int(mask_xyz.sum())
    cut = _fraction_outside(mask_xyz, coarse_grid, grid)
    if cut > cfg.max_brain_cut:
        fov = " x ".join(f"{v:g}" for v in cfg.field_of_view_mm)
        raise InputError(
            f"the brain mask ({brain_voxels * geometry.voxel_volume_ml(mask_spacing):.0f} mL) does not fit "
            f"the model grid ({fov} mm): {cut:.1%} of it would be cut "
            f"(limit {cfg.max_brain_cut:.0%}); the mask probably includes neck or face"
        )
    if cut >= WARN_BRAIN_CUT:  # below this, a few border voxels of a generous mask: not worth a warning
        warnings.warn(f"{cut:.1%} of the brain mask lies outside the model grid and is cut", stacklevel=2)

    values = geometry.resample(image, grid, cfg.interpolation)
    # The coarse mask is resampled as a fraction and cut at one half: smooth edges, no staircase.
    mask_img = geometry.resample(sitk.Cast(coarse_mask, sitk.sitkFloat32), grid, "linear")
    lap("resample")

    array = np.maximum(geometry.image_to_xyz(values), 0.0)
    mask = (geometry.image_to_xyz(mask_img) >= 0.5).astype(np.uint8)
    if not mask.any():
        raise InputError("the brain mask is empty on the model grid (model grid spacing too coarse?)")
    if cfg.apply_mask:
        array *= mask
    array = array.astype(np.float32, copy=False)
    grid_image = geometry.to_grid_image(array, grid.reference())
    lap("finish")
    timings["total"] = time.perf_counter() - start
    log.debug(
        "preprocessed onto %s voxels of %s mm: brain %.0f mL centred at %s mm, %.1f%% cut; steps %s",
        "x".join(map(str, cfg.shape)),
        "x".join(f"{s:g}" for s in cfg.spacing),
        brain_voxels * geometry.voxel_volume_ml(mask_spacing),
        ", ".join(f"{c:.1f}" for c in centre),
        100 * cut,
        ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()),
    )
    return Preprocessed(
        array=array,
        mask=mask,
        grid=grid_image,
        brain_centre_mm=tuple(float(c) for c in centre),  # type: ignore[arg-type]
        brain_volume_ml=brain_voxels * geometry.voxel_volume_ml(mask_spacing),
        brain_cut=cut,
        timings=timings,
    )


def _fraction_outside(mask_xyz: np.ndarray, mask_grid: geometry.Grid, grid: geometry.Grid) -> float:
    """Fraction of mask voxels whose centre falls outside ``grid``'s voxel-edge bounding box."""
    idx = np.argwhere(mask_xyz)
    if len(idx) == 0:
        return 0.0
    points = np.asarray(mask_grid.origin) + idx * np.asarray(mask_grid.spacing)
    half = np.asarray(grid.spacing) / 2
    low = np.asarray(grid.origin) - half
    high = np.asarray(grid.origin) + (np.asarray(grid.size) - 1) * np.asarray(grid.spacing) + half
    inside = np.all((points >= low) & (points <= high), axis=1)
    return float(1.0 - inside.mean())
