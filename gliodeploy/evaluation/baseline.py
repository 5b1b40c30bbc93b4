"""The clinicians' static 18F-FDOPA parameters, computed from the PET (and a reader's lesion location).

This is the baseline a CNN has to beat: TBRmax, TBRmean, tumour-to-striatum ratio (TSR) and the
metabolic tumour volume (MTV). It works on a brain-masked SUV volume on the model grid (``[x, y,
z]``, LPS orientation, so ``x`` is the left-right axis), e.g. a preprocessing cache entry. Every
parameter of the method lives in :class:`BaselineSettings`.

Method (no segmentation, no atlas - every step is a documented heuristic):

1. **Smoothing**: a Gaussian of ``smoothing_mm`` sigma, used only to *locate* structures so that a
   single noisy voxel cannot win; uptake values are always read from the unsmoothed SUV.
2. **Striatum**: physiologically hot and bilateral, near the brain centre. A symmetry map
   ``min(smooth, mirror_x(smooth))`` (mirror about the brain's centroid plane) is high only where
   *both* hemispheres are hot, so a unilateral tumour - however hot - does not qualify. Inside a
   central box (+-``striatum_box_mm`` around the brain centroid) the striatal **core** is the region
   of that map above ``striatum_fraction`` of its maximum over the background (median brain uptake;
   half-maximum by default), and its mirror image. The **whole striatum** is then grown from the
   core: the connected regions above the lower ``striatum_grow_fraction`` (20 % by default, same
   scale) that touch the core, still inside the box, of a *tolerant* symmetry map
   ``min(smooth, max over a ball of symmetry_tolerance_mm (mirror_x(smooth)))`` - a tilted head moves
   the two caudate heads ~1 cm off each other's mirror image, which the strict map would miss. This
   takes in the partial-volume rim that a half-maximum core misses (at 4 mm voxels the rim is
   several voxels wide and hotter than a faint lesion). The **excluded zone** is the whole striatum
   dilated by ``exclusion_mm``. A lesion touching the striatum can lose the part of it inside the
   zone: give a reader location for such scans.
3. **Lesion location**, by the first available of:

   * ``reader_voi`` - a reader's lesion VOI (mask on the grid): used as the lesion VOI as given;
   * ``reader_point`` - a reader's lesion point: the peak is the hottest unsmoothed voxel within
     ``reader_radius_mm`` of it, outside the excluded zone;
   * ``automatic`` - the hottest smoothed voxel of the (eroded) brain outside the excluded zone;
     the peak is then the hottest unsmoothed voxel within ``peak_radius_mm`` of it, outside the zone.

   The automatic hotspot is always computed and recorded (``automatic_voxel``), so its distance to a
   known lesion centre can be reported even when a reader location is used.
4. **Healthy reference**: brain eroded by ``erosion_mm`` (partial volume at the edge) minus the
   excluded zone minus the lesion VOI dilated by ``voi_margin_mm``; its 10 %-trimmed mean SUV.
5. **Lesion VOI / MTV** (point or automatic): the connected region of voxels >= ``mtv_factor`` (1.6)
   x reference that contains the peak, **searched outside the excluded zone only** (the zone is
   masked before the connected-component step, so the VOI can never grow into the striatum). MTV is
   its volume in mL. Steps 4-5 are iterated twice (the VOI refines the reference). When the peak is
   below 1.6 x reference (typical of TRC), MTV is 0 and the VOI falls back to the connected voxels
   >= ``fallback_fraction`` (90 %) of the smoothed peak uptake, again outside the zone, for TBRmean.
   With a reader VOI, the VOI is the reader's (within the brain mask) and MTV is the volume of its
   voxels >= 1.6 x reference.
6. TBRmax = SUVmax(VOI) / reference, TBRmean = mean SUV(VOI) / reference, TSR = SUVmax(VOI) /
   SUVmax(striatal core).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from gliodeploy.errors import ConfigError, InputError

#: Literature cut-offs on TBRmax for recurrence vs TRC (Herrmann 2013: 1.81; 2.0; MTV uses 1.6).
LITERATURE_CUTOFFS: tuple[float, ...] = (1.6, 2.0)
#: Parameters usable as a recurrence score (higher = more likely recurrence).
SCORE_NAMES: tuple[str, ...] = ("tbr_max", "tbr_mean", "tsr", "mtv_ml")
#: Where the lesion location of a scan came from (``StaticParameters.lesion_source``).
LESION_SOURCES: tuple[str, ...] = ("reader_voi", "reader_point", "automatic")
#: Distance (mm) beyond which an automatic hotspot counts as a miss of the true lesion.
MISS_DISTANCE_MM: float = 20.0


@dataclass(frozen=True)
class BaselineSettings:
    """Every parameter of the TBR baseline (mm are physical millimetres; see the module docstring).

    Attributes:
        smoothing_mm: Gaussian sigma of the copy used to locate striatum and hotspot (values are read
            unsmoothed).
        erosion_mm: erosion of the brain mask for the healthy reference and the automatic search
            (partial volume at the brain edge).
        striatum_box_mm: half-size (x, y, z) of the central box around the brain centroid that holds
            the striatum.
        striatum_fraction: level of the striatal core, as a fraction of the symmetric map's maximum
            above the background (0.5 = half-maximum).
        striatum_grow_fraction: lower level (same scale) down to which the striatum is grown from its
            core, taking in the partial-volume rim; must be <= ``striatum_fraction``.
        symmetry_tolerance_mm: how far the mirror-side uptake may be from the mirror point in the map
            the striatum is grown on (head tilt moves the striata off the mirror plane).
        exclusion_mm: margin added around the grown striatum: the excluded zone, never searched for
            a lesion and never part of a point/automatic lesion VOI or of the healthy reference.
        voi_margin_mm: margin around the lesion VOI kept out of the healthy reference.
        peak_radius_mm: radius around the smoothed automatic hotspot searched for the unsmoothed peak.
        reader_radius_mm: radius around a reader's lesion point searched for the peak.
        mtv_factor: MTV / lesion VOI threshold, as a multiple of the healthy reference (1.6).
        fallback_fraction: VOI when the peak is below ``mtv_factor`` x reference: connected voxels
            at or above this fraction of the smoothed peak uptake.
    """

    smoothing_mm: float = 3.0
    erosion_mm: float = 4.0
    striatum_box_mm: tuple[float, float, float] = (40.0, 40.0, 35.0)
    striatum_fraction: float = 0.5
    striatum_grow_fraction: float = 0.2
    symmetry_tolerance_mm: float = 8.0
    exclusion_mm: float = 4.0
    voi_margin_mm: float = 6.0
    peak_radius_mm: float = 10.0
    reader_radius_mm: float = 10.0
    mtv_factor: float = 1.6
    fallback_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.striatum_grow_fraction <= self.striatum_fraction < 1.0:
            raise ConfigError(
                "baseline striatum fractions need 0 < striatum_grow_fraction <= striatum_fraction < 1, got "
                f"{self.striatum_grow_fraction} and {self.striatum_fraction}"
            )
        for name in (
            "smoothing_mm",
            "erosion_mm",
            "symmetry_tolerance_mm",
            "exclusion_mm",
            "voi_margin_mm",
            "peak_radius_mm",
            "reader_radius_mm",
        ):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"baseline setting {name} must be >= 0, got {getattr(self, name)}")
        if not self.mtv_factor > 1.0 or not 0.0 < self.fallback_fraction < 1.0:
            raise ConfigError("baseline mtv_factor must be > 1 and fallback_fraction in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class StaticParameters:
    """Static FDOPA parameters of one scan (uptakes in SUV, MTV in mL, voxels as grid indices).

    ``lesion_voxel`` is the lesion peak actually used; ``lesion_source`` says where the location came
    from (one of :data:`LESION_SOURCES`); ``automatic_voxel`` is the automatic hotspot, computed in
    every case. ``automatic_hotspot_mm`` (its physical LPS position) and ``automatic_hotspot_error_mm``
    (its distance to a known true lesion centre) are filled in by the caller when the grid geometry
    and the truth are known (see ``gliodeploy.evaluation.inference``).
    """

    tbr_max: float
    tbr_mean: float
    tsr: float
    mtv_ml: float
    suv_max: float
    reference_suv: float
    striatum_suv_max: float
    lesion_voxel: tuple[int, int, int]
    lesion_source: str = "automatic"
    automatic_voxel: tuple[int, int, int] | None = None
    automatic_hotspot_mm: tuple[float, float, float] | None = None
    automatic_hotspot_error_mm: float | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON/CSV."""
        return asdict(self)


@dataclass(frozen=True)
class BaselineRegions:
    """:class:`StaticParameters` plus the boolean masks behind them (QC, tests)."""

    parameters: StaticParameters
    striatum_core: np.ndarray
    striatum: np.ndarray  # grown (whole) striatum
    excluded: np.ndarray  # grown striatum + exclusion_mm: never part of a lesion VOI (point/automatic)
    voi: np.ndarray
    reference: np.ndarray


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


def _within(
    shape: tuple[int, ...], centre: Sequence[float], spacing: np.ndarray, radius_mm: float
) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, centre, spacing, strict=True))
    return d2 <= radius_mm**2


def _argmax(values: np.ndarray, where: np.ndarray) -> tuple[int, int, int]:
    return tuple(
        int(i) for i in np.unravel_index(int(np.argmax(np.where(where, values, -np.inf))), values.shape)
    )


def analyse(
    suv: np.ndarray,
    brain_mask: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0),
    settings: BaselineSettings | None = None,
    *,
    reader_point: Sequence[float] | None = None,
    reader_voi: np.ndarray | None = None,
) -> BaselineRegions:
    """Static parameters of one brain-masked SUV volume and the regions behind them.

    Args:
        suv: SUV volume ``[x, y, z]`` on the model grid.
        brain_mask: brain mask (default: ``suv > 0``).
        spacing_mm: voxel size (x, y, z).
        settings: method parameters (default :class:`BaselineSettings`).
        reader_point: a reader's lesion location as a (continuous) voxel index on this grid.
        reader_voi: a reader's lesion VOI, a mask of the volume's shape (wins over ``reader_point``).

    Raises :class:`InputError` for a volume that is not 3-D, non-finite, mismatched with its mask, with
    too little brain to define a reference region, a reader point outside the brain or whose
    neighbourhood lies entirely in the excluded striatal zone, or a reader VOI that misses the brain.
    """
    from scipy import ndimage, stats

    s = settings or BaselineSettings()
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

    smooth = ndimage.gaussian_filter(np.where(brain, suv, 0).astype(np.float32), s.smoothing_mm / spacing)
    inner = ndimage.binary_erosion(brain, _ball(s.erosion_mm / spacing))
    if inner.sum() < 500:
        inner = brain
    centre = np.array(ndimage.center_of_mass(brain))

    # Striatum: bilateral hot region near the centre (symmetry rejects a unilateral tumour).
    sym = np.minimum(smooth, _mirror_x(smooth, centre[0])) * inner
    box = np.zeros_like(brain)
    lo = np.maximum(np.floor(centre - np.asarray(s.striatum_box_mm) / spacing).astype(int), 0)
    hi = np.ceil(centre + np.asarray(s.striatum_box_mm) / spacing).astype(int) + 1
    box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    sym_box = np.where(box, sym, 0)
    seed = np.unravel_index(int(np.argmax(sym_box)), sym.shape)
    background = float(np.median(suv[inner]))  # first guess of healthy uptake (lesion/striatum are small)
    peak_above_bg = float(sym_box[seed]) - background

    def bilateral(region: np.ndarray) -> np.ndarray:
        return (region | _mirror_x(region.astype(np.uint8), centre[0]).astype(bool)) & brain

    # every part (caudate, putamen may be separate blobs at 4-8 mm voxels)
    core = sym_box >= background + s.striatum_fraction * peak_above_bg
    # Growth map: like ``sym`` but the mirror side may be up to ``symmetry_tolerance_mm`` away, so a
    # striatum that a tilted head moves off the mirror plane still grows whole on each side.
    # (computed on the box plus the tolerance only: a grey dilation of the whole grid is slow)
    footprint = _ball(s.symmetry_tolerance_mm / spacing)
    pad = np.asarray(footprint.shape) // 2
    crop = tuple(slice(max(a - k, 0), b + k) for a, b, k in zip(lo, hi, pad, strict=True))
    tolerant = np.zeros_like(smooth)
    tolerant[crop] = ndimage.grey_dilation(_mirror_x(smooth, centre[0])[crop], footprint=footprint)
    grow_map = np.where(box, np.minimum(smooth, tolerant) * inner, 0)
    labels, _ = ndimage.label(grow_map >= background + s.striatum_grow_fraction * peak_above_bg)
    grown = np.isin(labels, np.unique(labels[core & (labels > 0)]))  # the low-level regions touching the core
    core = bilateral(core)
    grown = (grown | core) & brain
    striatum_max = float(suv[core].max())
    excluded = ndimage.binary_dilation(grown, _ball(s.exclusion_mm / spacing))
    allowed = brain & ~excluded  # the only voxels a point/automatic lesion VOI may contain

    # Automatic hotspot: hottest smoothed voxel of the brain outside the excluded zone, then the
    # unsmoothed peak near it (smoothing locates the lesion but may shift the maximum by a few mm).
    search = inner & ~excluded
    if not search.any():
        raise InputError("no brain left outside the striatum to search for a lesion")
    hotspot = _argmax(smooth, search)
    automatic = _argmax(suv, _within(suv.shape, hotspot, spacing, s.peak_radius_mm) & search)

    voi_given = None
    if reader_voi is not None:
        voi_given = np.asarray(reader_voi) > 0
        if voi_given.shape != suv.shape:
            raise InputError(f"reader VOI shape {voi_given.shape} differs from the SUV volume's {suv.shape}")
        voi_given &= brain
        if not voi_given.any():
            raise InputError("the reader's lesion VOI has no voxel inside the brain mask on the model grid")
        source = "reader_voi"
        peak = _argmax(suv, voi_given)
    elif reader_point is not None:
        point = np.asarray(reader_point, dtype=float)
        if point.shape != (3,) or not np.isfinite(point).all():
            raise InputError(f"reader point must be 3 finite voxel coordinates, got {reader_point!r}")
        index = tuple(int(i) for i in np.round(point))
        if not all(0 <= i < n for i, n in zip(index, suv.shape, strict=True)) or not brain[index]:
            raise InputError(f"the reader's lesion point (voxel {index}) lies outside the brain mask")
        near = _within(suv.shape, point, spacing, s.reader_radius_mm) & allowed
        if not near.any():
            raise InputError(
                f"the reader's lesion point (voxel {index}) lies within the striatum's excluded zone "
                f"(whole striatum + {s.exclusion_mm:g} mm): give a lesion VOI for this scan instead"
            )
        source = "reader_point"
        peak = _argmax(suv, near)
    else:
        source = "automatic"
        peak = automatic

    healthy = inner & ~excluded
    if healthy.sum() < 100:
        raise InputError("healthy-brain reference region is too small (striatum covers the brain?)")
    reference = float(np.median(suv[healthy]))
    voi = np.zeros_like(brain) if voi_given is None else voi_given
    region = healthy
    for _ in range(2):  # VOI refines the reference, which refines the VOI
        if voi_given is None:
            voi = _component_containing((suv >= s.mtv_factor * reference) & allowed, peak)
        region = (
            healthy & ~ndimage.binary_dilation(voi, _ball(s.voi_margin_mm / spacing))
            if voi.any()
            else healthy
        )
        if region.sum() < 100:
            raise InputError("healthy-brain reference region is too small (lesion covers the brain?)")
        reference = float(stats.trim_mean(suv[region], 0.1))
    if reference <= 0:
        raise InputError("healthy-brain reference uptake is not positive: is the volume in SUV?")
    if voi_given is None:
        mtv_ml = float(voi.sum() * np.prod(spacing) / 1000.0)
        if not voi.any():  # no voxel above 1.6 x background: the 90 % isocontour around the peak
            voi = _component_containing((smooth >= s.fallback_fraction * smooth[peak]) & allowed, peak)
    else:
        mtv_ml = float((voi & (suv >= s.mtv_factor * reference)).sum() * np.prod(spacing) / 1000.0)
    suv_max = float(suv[voi].max())
    params = StaticParameters(
        tbr_max=suv_max / reference,
        tbr_mean=float(suv[voi].mean()) / reference,
        tsr=suv_max / striatum_max if striatum_max > 0 else float("nan"),
        mtv_ml=mtv_ml,
        suv_max=suv_max,
        reference_suv=reference,
        striatum_suv_max=striatum_max,
        lesion_voxel=peak,
        lesion_source=source,
        automatic_voxel=automatic,
    )
    return BaselineRegions(params, core, grown, excluded, voi, region)


def static_parameters(
    suv: np.ndarray,
    brain_mask: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0),
    settings: BaselineSettings | None = None,
    *,
    reader_point: Sequence[float] | None = None,
    reader_voi: np.ndarray | None = None,
    **overrides: Any,
) -> StaticParameters:
    """TBRmax, TBRmean, TSR and MTV of one brain-masked SUV volume (see :func:`analyse`).

    ``overrides`` replace single :class:`BaselineSettings` fields (e.g. ``exclusion_mm=8.0``).
    """
    if overrides:
        known = {f.name for f in fields(BaselineSettings)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown baseline setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        settings = replace(settings or BaselineSettings(), **overrides)
    return analyse(
        suv, brain_mask, spacing_mm, settings, reader_point=reader_point, reader_voi=reader_voi
    ).parameters


def hotspot_miss_rate(
    distances_mm: Sequence[float | None],
    labels: Sequence[int],
    splits: Sequence[str] | None = None,
    *,
    threshold_mm: float = MISS_DISTANCE_MM,
) -> dict[str, Any] | None:
    """How often the automatic hotspot lies more than ``threshold_mm`` from the true lesion centre.

    ``distances_mm[i]`` is scan i's distance (None where no truth is known: left out). Returns
    ``{"threshold_mm", "n", "n_miss", "fraction", "per_class": {"recurrence"|"trc": {...}},
    "per_split": {...}}`` (``fraction`` is NaN for an empty group), or None when no scan has a truth.
    """
    if len(labels) != len(distances_mm) or (splits is not None and len(splits) != len(distances_mm)):
        raise ValueError("distances, labels and splits must have the same length")

    def group(keep: Sequence[bool]) -> dict[str, Any]:
        d = [float(v) for v, k in zip(distances_mm, keep, strict=True) if k and v is not None]
        n_miss = sum(v > threshold_mm for v in d)
        return {"n": len(d), "n_miss": int(n_miss), "fraction": n_miss / len(d) if d else math.nan}

    everything = group([True] * len(labels))
    if everything["n"] == 0:
        return None
    out: dict[str, Any] = {"threshold_mm": float(threshold_mm), **everything}
    out["per_class"] = {
        name: group([int(y) == value for y in labels]) for name, value in (("recurrence", 1), ("trc", 0))
    }
    if splits is not None:
        out["per_split"] = {sp: group([x == sp for x in splits]) for sp in sorted(set(splits))}
    return out


def describe_lesion_location(baseline: dict[str, Any]) -> list[tuple[str, str]]:
    """Sentences for the report from a baseline block of metrics.json: ``[(key, sentence), ...]``.

    ``lesion-sources``: how many scans used each lesion location source (when any reader location was
    given); ``hotspot-miss``: on cohorts with a true lesion centre, how often the automatic hotspot is
    more than 20 mm from it, overall and per class.
    """
    out = []
    sources = baseline.get("lesion_sources") or {}
    if any(sources.get(k) for k in ("reader_point", "reader_voi")):
        out.append(
            (
                "lesion-sources",
                f"Lesion location: reader VOI in {sources.get('reader_voi', 0)}, reader point in "
                f"{sources.get('reader_point', 0)}, automatic hotspot in {sources.get('automatic', 0)} "
                "scans.",
            )
        )
    miss = baseline.get("hotspot_miss")
    if miss:

        def part(g: dict[str, Any]) -> str:
            return f"{g['n_miss']}/{g['n']} ({g['fraction']:.0%})" if g["n"] else "n/a"

        cls = miss["per_class"]
        out.append(
            (
                "hotspot-miss",
                f"The automatic hotspot lies more than {miss['threshold_mm']:g} mm from the true lesion "
                f"centre in {part(miss)} scans (recurrence {part(cls['recurrence'])}, "
                f"TRC {part(cls['trc'])}); the true centre comes from the cohort's ground truth.",
            )
        )
    return out
