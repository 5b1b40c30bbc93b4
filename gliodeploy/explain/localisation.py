"""Does a Grad-CAM map point at the lesion? Peak, distances, rates and the words for the report.

numpy only (no torch): the evaluation report imports the wording from here.

Coordinates: the model grid is LPS and axis-aligned (``origin`` = physical centre of voxel 0, mm);
preprocessing reorients without moving anything, so a point in mm on the grid is the same physical
point (SimpleITK / DICOM LPS convention) as in the native scan. The synthetic truth
``lesion_center_mm`` is in that same space (checked against the centroid of the truth lesion mask).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gliodeploy.errors import InputError

#: A Grad-CAM peak within this distance of the true lesion centre counts as localised.
LOCALISED_MM = 20.0
#: Median attention-inside-brain fraction below which the report says the attention is outside.
MIN_INSIDE_BRAIN = 0.8
#: Upper CI bound of the localisation rate below which the report says the map misses the lesion.
MIN_LOCALISATION_UPPER = 0.5
_Z95 = 1.959963984540054


def find_peak(
    cam: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), *, smooth_mm: float = 0.0
) -> tuple[int, int, int]:
    """Voxel index of the map's maximum.

    ``smooth_mm`` > 0 first smooths the map with a Gaussian of that sigma (mm; against one hot
    voxel). Ties - the plateau a coarse map upsampled with clamped borders leaves, where a plain
    argmax returns the plateau's first voxel, e.g. z = 0 - are broken by taking the tied voxel closest
    to the plateau's centroid.
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 3 or cam.size == 0:
        raise InputError(f"a peak needs a 3-D map, got shape {cam.shape}")
    cam = np.nan_to_num(cam, nan=0.0)
    if smooth_mm > 0:
        cam = _gaussian(cam, spacing_mm, smooth_mm)
    top = cam.max()
    tol = 1e-6 * max(abs(top), 1e-12)
    tied = np.argwhere(cam >= top - tol)
    if len(tied) == 1:
        return tuple(int(i) for i in tied[0])  # type: ignore[return-value]
    centre = tied.mean(axis=0)
    best = tied[np.argmin(((tied - centre) ** 2).sum(axis=1))]
    return tuple(int(i) for i in best)  # type: ignore[return-value]


def _gaussian(cam: np.ndarray, spacing_mm: Sequence[float], sigma_mm: float) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(cam.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing_mm))
    out = sitk.SmoothingRecursiveGaussian(img, float(sigma_mm))
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def grid_point_mm(
    index: Sequence[float], origin_mm: Sequence[float], spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """Physical LPS mm of a (continuous) voxel index of the axis-aligned model grid."""
    return tuple(  # type: ignore[return-value]
        float(o + i * s) for i, o, s in zip(index, origin_mm, spacing_mm, strict=True)
    )


def grid_index(
    point_mm: Sequence[float], origin_mm: Sequence[float], spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """Continuous voxel index of a physical LPS mm point on the axis-aligned model grid."""
    return tuple(  # type: ignore[return-value]
        float((p - o) / s) for p, o, s in zip(point_mm, origin_mm, spacing_mm, strict=True)
    )


def distance_mm(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance of two physical points (mm)."""
    return float(np.linalg.norm(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def parse_lesion_mm(text: str) -> tuple[float, float, float]:
    """``"x,y,z"`` (also ``;`` or spaces) in LPS mm -> three finite floats; InputError otherwise."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(
            f"lesion point {text!r} is not 'x,y,z' (three numbers in LPS mm, the scan's physical space)"
        )
    return values  # type: ignore[return-value]


def wilson_interval(successes: int, n: int, *, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows: Sequence[dict[str, Any]], *, threshold_mm: float = LOCALISED_MM) -> dict[str, Any]:
    """Cohort figures from per-scan rows (``attention_inside_brain``, ``localised``: True / False / None
    without a lesion centre, ``peak_to_lesion_mm``: None without a centre or for an empty map).

    Returns the localisation rate over the rows with a known lesion centre (Wilson 95 % CI; an empty
    map counts as not localised), the median attention inside the brain over every row, the median
    peak-to-lesion distance and the number of empty maps (``map_empty``).
    """
    inside = [float(r["attention_inside_brain"]) for r in rows]
    judged = [bool(r["localised"]) for r in rows if r.get("localised") is not None]
    dists = [float(r["peak_to_lesion_mm"]) for r in rows if r.get("peak_to_lesion_mm") is not None]
    hits = sum(judged)
    low, high = wilson_interval(hits, len(judged))
    return {
        "n_explained": len(rows),
        "n_with_truth": len(judged),
        "n_localised": int(hits),
        "n_empty_maps": sum(bool(r.get("map_empty")) for r in rows),
        "threshold_mm": float(threshold_mm),
        "localisation_rate": {
            "value": hits / len(judged) if judged else math.nan,
            "low": low,
            "high": high,
            "method": "Wilson score interval, 95 %",
        },
        "median_attention_inside_brain": float(np.median(inside)) if inside else math.nan,
        "median_peak_to_lesion_mm": float(np.median(dists)) if dists else math.nan,
    }


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.0f} %"


def _ci(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"{100 * low:.0f}-{100 * high:.0f} %"


def _mm(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f} mm"


def localisation_sentence(loc: dict[str, Any]) -> str:
    """One sentence for the report: what the cohort's Grad-CAM localisation figures are."""
    who = f"{loc.get('n_explained', 0)} {loc.get('population', 'true recurrences')}"
    layer = loc.get("layer", "?")
    mm = loc.get("layer_mm_per_voxel")
    res = f", up to {max(mm):.0f} mm per feature voxel" if mm else ""
    text = f"{loc.get('method_name', 'Grad-CAM')} of the fold ensemble (layer {layer}{res}) on the {who}: "
    rate = loc["localisation_rate"]
    if loc.get("n_with_truth"):
        text += (
            f"peak within {loc['threshold_mm']:.0f} mm of the true lesion centre in {loc['n_localised']} "
            f"of {loc['n_with_truth']} ({_pct(rate['value'])}, 95 % CI "
            f"{_ci(rate['low'], rate['high'])}), median distance {_mm(loc['median_peak_to_lesion_mm'])}; "
        )
        if loc.get("n_empty_maps"):
            text += f"{loc['n_empty_maps']} empty maps; "
    else:
        text += "no true lesion centre known, so no localisation rate; "
    if loc.get("n_explained"):
        text += f"median attention inside the brain {_pct(loc['median_attention_inside_brain'])}."
    else:
        text += "nothing to explain."
    return text


def localisation_diagnosis(loc: dict[str, Any]) -> list[str]:
    """Sentences for the learning diagnosis when Grad-CAM says the model does not look at the lesion
    (empty list: nothing alarming)."""
    notes: list[str] = []
    if not loc or not loc.get("n_explained"):
        return notes
    median_inside = float(loc["median_attention_inside_brain"])
    if median_inside < MIN_INSIDE_BRAIN:
        where = "mostly" if median_inside < 0.5 else "largely"
        notes.append(
            f"Grad-CAM attention is {where} outside the brain (median {_pct(median_inside)} inside, "
            f"{loc['n_explained']} {loc.get('population', 'true recurrences')}): the model may use "
            "something other than the lesion (skull, field-of-view border, background)."
        )
    rate = loc.get("localisation_rate") or {}
    high = rate.get("high", math.nan)
    if loc.get("n_with_truth") and not math.isnan(high) and high < MIN_LOCALISATION_UPPER:
        notes.append(
            f"Grad-CAM does not point at the lesion: its peak lies within {loc['threshold_mm']:.0f} mm "
            f"of the true lesion centre in {loc['n_localised']} of {loc['n_with_truth']} true "
            f"recurrences ({_pct(rate['value'])}, 95 % CI {_ci(rate['low'], rate['high'])}; "
            f"median distance {_mm(loc['median_peak_to_lesion_mm'])}): the model may use something "
            "other than the lesion."
        )
    if loc.get("n_empty_maps"):
        notes.append(
            f"Grad-CAM found no positive evidence at layer {loc.get('layer', '?')} in "
            f"{loc['n_empty_maps']} of {loc['n_explained']} scans (empty maps, counted as not localised); "
            "Grad-CAM++ (`gliodeploy explain --method gcampp`) weights only positive gradients."
        )
    if loc.get("layer_warning"):
        shape = "x".join(str(v) for v in loc.get("layer_feature_shape") or [])
        mm = max(loc.get("layer_mm_per_voxel") or [math.nan])
        notes.append(
            f"The Grad-CAM layer {loc.get('layer', '?')} is too coarse to localise a lesion ({shape} "
            f"feature map, up to {mm:.0f} mm per voxel): its maps say little about where the model looks."
        )
    return notes


def localise(
    cam: np.ndarray,
    mask: np.ndarray,
    origin_mm: Sequence[float],
    spacing_mm: Sequence[float],
    *,
    lesion_mm: Sequence[float] | None = None,
    smooth_mm: float = 0.0,
    threshold_mm: float = LOCALISED_MM,
) -> dict[str, Any]:
    """Localisation fields of one map on the model grid (axis-aligned LPS, ``origin_mm`` = voxel 0).

    ``attention_inside_brain``: share of the map's total inside ``mask`` (not masked away: a model
    that looks outside the brain shows it here); ``peak_voxel`` / ``peak_mm``: the map's maximum
    (:func:`find_peak`) as a grid index and in physical LPS mm; ``peak_inside_brain``; with a true
    lesion centre ``lesion_mm`` (LPS mm): ``peak_to_lesion_mm`` and ``localised`` (<= threshold).
    An all-zero map (``map_empty``: Grad-CAM found no positive evidence at that layer) has no peak
    (None fields), attention inside the brain 0 and, with a lesion centre, ``localised`` False.
    """
    cam = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=0.0), 0, None)
    mask = np.asarray(mask) > 0
    if cam.shape != mask.shape:
        raise InputError(f"map shape {cam.shape} differs from mask shape {mask.shape}")
    total = cam.sum()
    out: dict[str, Any] = {
        "attention_inside_brain": float(cam[mask].sum() / total) if total > 0 else 0.0,
        "map_empty": bool(total <= 0),
        "peak_voxel": None,
        "peak_mm": None,
        "peak_inside_brain": False,
        "peak_smoothing_mm": float(smooth_mm),
        "lesion_mm": [float(v) for v in lesion_mm] if lesion_mm is not None else None,
        "peak_to_lesion_mm": None,
        "localised": False if lesion_mm is not None else None,
        "localisation_threshold_mm": float(threshold_mm),
    }
    if total <= 0:
        return out
    peak = find_peak(cam, spacing_mm, smooth_mm=smooth_mm)
    peak_mm = grid_point_mm(peak, origin_mm, spacing_mm)
    out.update(peak_voxel=list(peak), peak_mm=list(peak_mm), peak_inside_brain=bool(mask[peak]))
    if lesion_mm is not None:
        d = distance_mm(peak_mm, lesion_mm)
        out.update(peak_to_lesion_mm=d, localised=bool(d <= threshold_mm))
    return out
