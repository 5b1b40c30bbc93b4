"""Brain mask for static FDOPA PET, with SimpleITK filters only.

FDOPA makes this harder than FDG: healthy cortex is *low* (SUV ~1-1.5) while the striatum is hot,
and scalp, face, salivary glands or neck may be as bright as brain. The mask therefore thresholds
relative to the *median tissue* uptake (dominated by brain in a head scan) rather than the maximum,
then cuts thin scalp bridges by a morphological opening and keeps the largest component.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.preprocessing.config import PreprocessConfig

#: Voxels below this fraction of the 99.5th percentile are air/noise, not tissue, for the median.
_AIR_FRACTION = 0.05


def brain_mask(image: sitk.Image, cfg: PreprocessConfig) -> sitk.Image:
    """Binary (uint8) brain mask of an axis-aligned SUV image, on the same grid.

    Steps: Gaussian smoothing (``cfg.mask_smoothing_mm``) -> threshold at ``cfg.mask_threshold`` x
    median tissue SUV -> opening (``cfg.mask_opening_mm``) -> largest face-connected component ->
    closing (``cfg.mask_closing_mm``) -> hole filling in 3D, then per axial slice (cold tumour beds
    or ventricles inside the brain belong to it). Raises :class:`InputError` if nothing is left.
    """
    spacing = np.asarray(image.GetSpacing())
    smooth = image
    if cfg.mask_smoothing_mm > 0:
        smooth = sitk.SmoothingRecursiveGaussian(image, cfg.mask_smoothing_mm)
    values = sitk.GetArrayViewFromImage(smooth)
    high = float(np.percentile(values, 99.5))
    if high <= 0:
        raise InputError("brain mask: the volume has (almost) no positive uptake")
    tissue = values[values > _AIR_FRACTION * high]
    threshold = cfg.mask_threshold * float(np.median(tissue))
    binary = sitk.BinaryThreshold(smooth, lowerThreshold=threshold, upperThreshold=float("inf"))

    if cfg.mask_opening_mm > 0:
        binary = sitk.BinaryMorphologicalOpening(binary, _radius(cfg.mask_opening_mm, spacing), sitk.sitkBall)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(binary, False), sortByObjectSize=True)
    mask = sitk.Equal(components, 1)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise InputError(
            f"brain mask is empty: no tissue above {threshold:.3g} (= {cfg.mask_threshold:g} x median tissue "
            "uptake) survives the opening; is the head in the field of view?"
        )
    if cfg.mask_closing_mm > 0:
        # Pad first so closing near the volume border does not erode the mask there.
        radius = _radius(cfg.mask_closing_mm, spacing)
        padded = sitk.ConstantPad(mask, radius, radius, 0)
        closed = sitk.BinaryMorphologicalClosing(padded, radius, sitk.sitkBall)
        mask = sitk.Crop(closed, radius, radius)
    mask = sitk.BinaryFillhole(mask)
    return _fill_axial_holes(mask)


def _radius(mm: float, spacing: np.ndarray) -> list[int]:
    """Per-axis kernel radius in voxels (at least 1) for a ball of ``mm`` radius."""
    return [max(1, round(mm / s)) for s in spacing]


def _fill_axial_holes(mask: sitk.Image) -> sitk.Image:
    """Fill holes slice by slice along z: a cavity open above or below is still closed in-plane."""
    array = sitk.GetArrayFromImage(mask)  # [z, y, x]
    for z in np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1)):
        array[z] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(array[z])))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(mask)
    return out
