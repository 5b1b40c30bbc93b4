"""The clinicians' static 18F-FDOPA parameters, computed automatically from the PET alone.

This is the baseline a CNN has to beat: TBRmax, TBRmean, tumour-to-striatum ratio (TSR) and the
metabolic tumour volume (MTV). It works on a brain-masked SUV volume on the model grid (``[x, y,
z]``, LPS orientation, so ``x`` is the left-right axis), e.g. a preprocessing cache entry.

Method (no segmentation, no atlas - every step is a documented heuristic):

1. **Smoothing**: a Gaussian of ``smoothing_mm`` sigma, used only to *locate* structures so that a
   single noisy voxel cannot win; uptake values are always read from the unsmoothed SUV.
2. **Striatum**: physiologically hot and bilateral, near the brain centre. A symmetry map
   ``min(smooth, mirror_x(smooth))`` (mirror about the brain's centroid plane) is high only where
   *both* hemispheres are hot, so a unilateral tumour - however hot - does not qualify. The
   striatum is the region of that map above ``striatum_fraction`` of its maximum over the
   background (median brain uptake; half-maximum by default) inside a central box
   (+-``striatum_box_mm`` around the brain centroid), and its mirror image.
3. **Lesion candidate**: the hottest smoothed voxel of the (eroded) brain outside the dilated
   striatum; the lesion's peak is then the hottest unsmoothed voxel within ``peak_radius_mm`` of it.
4. **Healthy reference**: brain eroded by ``erosion_mm`` (partial volume at the edge) minus the
   dilated striatum minus the dilated lesion VOI; its 10 %-trimmed mean SUV.
5. **Lesion VOI / MTV**: the connected region of voxels >= ``mtv_factor`` (1.6) x reference that
   contains the hotspot. MTV is its volume in mL. Steps 4-5 are iterated twice (the VOI refines the
   reference). When the peak is below 1.6 x reference (typical of TRC), MTV is 0 and the VOI
   falls back to the voxels >= 90 % of the hotspot's uptake around it, for TBRmean.
6. TBRmax = SUVmax(VOI) / reference, TBRmean = mean SUV(VOI) / reference, TSR = SUVmax(VOI) /
   SUVmax(striatum).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gliodeploy.errors import InputError

#: Literature cut-offs on TBRmax for recurrence vs TRC (Herrmann 2013: 1.81; 2.0; MTV uses 1.6).
LITERATURE_CUTOFFS: tuple[float, ...] = (1.6, 2.0)
#: Parameters usable as a recurrence score (higher = more likely recurrence).
SCORE_NAMES: tuple[str, ...] = ("tbr_max", "tbr_mean", "tsr", "mtv_ml")


@dataclass(frozen=True)
class StaticParameters:
    """Static FDOPA parameters of one scan (uptakes in SUV, MTV in mL, centre in voxel indices)."""

    tbr_max: float
    tbr_mean: float
    tsr: float
    mtv_ml: float
    suv_max: float
    reference_suv: float
    striatum_suv_max: float
    lesion_voxel: tuple[int, int, int]

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON/CSV."""
        return asdict(self)


def _ball(radius_vox: np.ndarray) -> np.ndarray:
    r = np.maximum(np.round(radius_vox).astype(int), 0)
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    dist = sum((g / max(k, 1)) ** 2 for g, k in zip(grids, r, strict=True))
    return dist <= 1.0


def _mirror_x(volume: np.ndarray, centre_x: float) -> np.ndarray:
    """Reflect about the plane x = centre_x (voxels reflected outside the grid become 0)."""
    x = np.arange(volume.shape[0])
    src = np.round(2 * centre_x - x).astype(int)
    inside = (src >= 0) & (src < volume.shape[0])
    out = np.zeros_like(volume)
    out[inside] = volume[src[inside]]
    return out


def _component_containing(binary: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    from scipy import ndimage

    labels, _ = ndimage.label(binary)
    lab = labels[seed]
    return labels == lab if lab else np.zeros_like(binary)


def static_parameters(
    suv: np.ndarray,
    brain_mask: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0),
    *,
    smoothing_mm: float = 3.0,
    erosion_mm: float = 4.0,
    striatum_box_mm: tuple[float, float, float] = (40.0, 40.0, 35.0),
    striatum_fraction: float = 0.5,
    exclusion_mm: float = 6.0,
    peak_radius_mm: float = 10.0,
    mtv_factor: float = 1.6,
) -> StaticParameters:
    """Compute TBRmax, TBRmean, TSR and MTV of one brain-masked SUV volume (see module docstring).

    Raises :class:`InputError` for a volume that is not 3-D, non-finite, mismatched with its mask, or
    with too little brain to define a reference region.
    """
    from scipy import ndimage, stats

    suv = np.asarray(suv, dtype=np.float32)
    if suv.ndim != 3:
        raise InputError(f"static parameters need a 3-D SUV volume, got shape {suv.shape}")
    if not np.isfinite(suv).all():
        raise InputError("SUV volume contains NaN or infinite values")
    brain = (suv > 0) if brain_mask is None else np.asarray(brain_mask) > 0
    if brain.shape != suv.shape:
        raise InputError(f"brain mask shape {brain.shape} differs from the SUV volume's {suv.shape}")
    spacing = np.asarray(spacing_mm, dtype=float)
    if brain.sum() < 1000:
        raise InputError(f"brain mask has only {int(brain.sum())} voxels: too small for a reference region")

    smooth = ndimage.gaussian_filter(np.where(brain, suv, 0).astype(np.float32), smoothing_mm / spacing)
    inner = ndimage.binary_erosion(brain, _ball(erosion_mm / spacing))
    if inner.sum() < 500:
        inner = brain
    centre = np.array(ndimage.center_of_mass(brain))

    # Striatum: bilateral hot region near the centre (symmetry rejects a unilateral tumour).
    sym = np.minimum(smooth, _mirror_x(smooth, centre[0])) * inner
    box = np.zeros_like(brain)
    lo = np.maximum(np.floor(centre - np.asarray(striatum_box_mm) / spacing).astype(int), 0)
    hi = np.ceil(centre + np.asarray(striatum_box_mm) / spacing).astype(int) + 1
    box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    sym_box = np.where(box, sym, 0)
    seed = np.unravel_index(int(np.argmax(sym_box)), sym.shape)
    background = float(np.median(suv[inner]))  # first guess of healthy uptake (lesion/striatum are small)
    level = background + striatum_fraction * (float(sym_box[seed]) - background)  # fraction of max above bg
    striatum = sym_box >= level  # every part (caudate, putamen may be separate blobs at 4-8 mm voxels)
    striatum |= _mirror_x(striatum.astype(np.uint8), centre[0]).astype(bool)
    striatum &= brain
    striatum_max = float(suv[striatum].max())
    striatum_zone = ndimage.binary_dilation(striatum, _ball(exclusion_mm / spacing))

    # Lesion hotspot: hottest smoothed voxel of the brain outside the striatum.
    search = inner & ~striatum_zone
    if not search.any():
        raise InputError("no brain left outside the striatum to search for a lesion")
    hotspot = np.unravel_index(int(np.argmax(np.where(search, smooth, -np.inf))), suv.shape)
    # the peak voxel: smoothing locates the lesion but may shift the maximum by a few mm
    grids = np.ogrid[tuple(slice(0, n) for n in suv.shape)]
    d2 = sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, hotspot, spacing, strict=True))
    near = (d2 <= peak_radius_mm**2) & search
    hotspot = np.unravel_index(int(np.argmax(np.where(near, suv, -np.inf))), suv.shape)

    healthy = inner & ~striatum_zone
    reference = float(np.median(suv[healthy]))
    voi = np.zeros_like(brain)
    for _ in range(2):  # VOI refines the reference, which refines the VOI
        voi = _component_containing((suv >= mtv_factor * reference) & brain & ~striatum, hotspot)
        region = (
            healthy & ~ndimage.binary_dilation(voi, _ball(exclusion_mm / spacing)) if voi.any() else healthy
        )
        if region.sum() < 100:
            raise InputError("healthy-brain reference region is too small (lesion covers the brain?)")
        reference = float(stats.trim_mean(suv[region], 0.1))
    if reference <= 0:
        raise InputError("healthy-brain reference uptake is not positive: is the volume in SUV?")
    mtv_ml = float(voi.sum() * np.prod(spacing) / 1000.0)
    if not voi.any():  # no voxel above 1.6 x background: the 90 % isocontour around the hotspot
        voi = _component_containing((smooth >= 0.9 * smooth[hotspot]) & search, hotspot)
    suv_max = float(suv[voi].max())
    return StaticParameters(
        tbr_max=suv_max / reference,
        tbr_mean=float(suv[voi].mean()) / reference,
        tsr=suv_max / striatum_max if striatum_max > 0 else float("nan"),
        mtv_ml=mtv_ml,
        suv_max=suv_max,
        reference_suv=reference,
        striatum_suv_max=striatum_max,
        lesion_voxel=tuple(int(i) for i in hotspot),
    )
