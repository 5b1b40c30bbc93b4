"""Brain mask for static FDOPA PET, with SimpleITK filters only.

FDOPA makes this harder than FDG: healthy cortex is *low* (SUV ~1-1.5) while the striatum is hot,
and scalp, face, salivary glands or neck may be as bright as brain. The mask therefore thresholds
relative to the *median tissue* uptake (dominated by brain in a head scan) rather than the maximum,
then cuts thin scalp bridges by a morphological opening and keeps the largest component. Neck soft
tissue joins the brain through a broad, thin valley at the skull base that blur fills; the mask is
therefore cut ``_MAX_BRAIN_HEIGHT_MM`` below the vertex (the top of the head in an LPS-oriented scan).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.preprocessing.config import PreprocessConfig

#: Voxels below this fraction of the 99.5th percentile are air/noise, not tissue, for the median.
_AIR_FRACTION = 0.05
#: First-pass threshold, as a fraction of the median tissue uptake: generous, it only finds the head.
_SEED_FRACTION = 0.5
#: Erosion (mm) of the first-pass head that leaves mostly brain, for the brain's reference level.
_CORE_MM = 12.0
#: Largest craniocaudal extent of a brain (vertex to the foramen magnum / cerebellar tonsils) plus
#: the mask's blur: adult brains measure ~120-140 mm, the (enlarged) MNI152 brain ~150 mm.
_MAX_BRAIN_HEIGHT_MM = 160.0


def brain_mask(image: sitk.Image, cfg: PreprocessConfig) -> sitk.Image:
    """Binary (uint8) brain mask of an axis-aligned SUV image, on the same grid.

    Two passes. The first thresholds at half the median *tissue* uptake (tissue: above
    ``_AIR_FRACTION`` of the 99.5th percentile) and keeps the largest blob after an opening: the head,
    possibly with scalp, face or neck still attached. Its core (eroded by ``_CORE_MM``) is mostly
    brain, so its median is the brain's own level, whatever the amount of neck in the field of view.
    The second pass thresholds at ``cfg.mask_threshold`` x that level -> opening
    (``cfg.mask_opening_mm``) -> largest face-connected component -> skull-base cut (nothing more
    than ``_MAX_BRAIN_HEIGHT_MM`` below the mask's top: neck that a hot, blurred skull base kept
    attached) -> closing (``cfg.mask_closing_mm``) -> hole filling in 3D, then per axial slice (cold
    tumour beds and ventricles belong to the brain). The image must be LPS-oriented (index z runs
    from inferior to superior), as ``geometry.orient`` makes it. Raises :class:`InputError` if
    nothing is left.
    """
    spacing = np.asarray(image.GetSpacing())
    smooth = image
    if cfg.mask_smoothing_mm > 0:
        smooth = sitk.SmoothingRecursiveGaussian(image, cfg.mask_smoothing_mm)
    values = sitk.GetArrayViewFromImage(smooth)
    high = float(np.percentile(values, 99.5))
    if high <= 0:
        raise InputError("brain mask: the volume has (almost) no positive uptake")
    tissue_level = float(np.median(values[values > _AIR_FRACTION * high]))
    head = _largest_blob(smooth, _SEED_FRACTION * tissue_level, cfg, spacing)
    core = sitk.BinaryErode(head, _radius(_CORE_MM, spacing), sitk.sitkBall)
    core_values = values[sitk.GetArrayViewFromImage(core if _any(core) else head) > 0]
    threshold = cfg.mask_threshold * float(np.median(core_values))
    mask = _cut_below_brain(_largest_blob(smooth, threshold, cfg, spacing), spacing)
    if cfg.mask_closing_mm > 0:
        # Pad first so closing near the volume border does not erode the mask there.
        radius = _radius(cfg.mask_closing_mm, spacing)
        padded = sitk.ConstantPad(mask, radius, radius, 0)
        closed = sitk.BinaryMorphologicalClosing(padded, radius, sitk.sitkBall)
        mask = sitk.Crop(closed, radius, radius)
    mask = sitk.BinaryFillhole(mask)
    return _fill_axial_holes(mask)


def _largest_blob(
    smooth: sitk.Image, threshold: float, cfg: PreprocessConfig, spacing: np.ndarray
) -> sitk.Image:
    """Threshold, open (cuts thin bridges) and keep the largest face-connected component."""
    binary = sitk.BinaryThreshold(smooth, lowerThreshold=threshold, upperThreshold=float("inf"))
    if cfg.mask_opening_mm > 0:
        binary = sitk.BinaryMorphologicalOpening(binary, _radius(cfg.mask_opening_mm, spacing), sitk.sitkBall)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(binary, False), sortByObjectSize=True)
    blob = sitk.Equal(components, 1)
    if not _any(blob):
        raise InputError(
            f"brain mask is empty: no tissue above {threshold:.3g} survives a {cfg.mask_opening_mm:g} mm "
            "opening; is the head in the field of view?"
        )
    return blob


def _cut_below_brain(mask: sitk.Image, spacing: np.ndarray) -> sitk.Image:
    """Clear axial slices more than ``_MAX_BRAIN_HEIGHT_MM`` below the mask's top slice (z superior)."""
    array = sitk.GetArrayFromImage(mask)  # [z, y, x]
    slices = np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))
    lowest = int(slices[-1]) - int(np.floor(_MAX_BRAIN_HEIGHT_MM / spacing[2])) + 1
    if lowest <= int(slices[0]):
        return mask
    array[:lowest] = 0
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(mask)
    return out


def _any(mask: sitk.Image) -> bool:
    return bool(np.any(sitk.GetArrayViewFromImage(mask)))


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
