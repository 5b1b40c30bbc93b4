"""PNG overlays of a heatmap on the PET: axial, coronal and sagittal cuts through one voxel (the
map's peak), model grid, LPS (x = right->left, y = anterior->posterior, z = inferior->superior).

Each PNG shows the PET in greyscale, the map as a semi-transparent colour overlay, the brain mask's
outline, a cross at the cut point (the peak) and, when known, a circle at the true lesion centre.
The cut is recorded in the PNG's ``gliodeploy`` text chunk (JSON: view, axis, index, centre), so a
reader - or a test - can check where it was cut.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gliodeploy.errors import InputError

VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: The array axis each view cuts (x = 0, y = 1, z = 2).
CUT_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
#: PNG text chunk holding the cut (JSON).
PNG_KEY = "gliodeploy"


def hottest_voxel(cam: np.ndarray) -> tuple[int, int, int]:
    """Index of the attention maximum (first one on ties; see ``localisation.find_peak`` for the
    peak the explainer uses)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape))  # type: ignore[return-value]


def _slice(volume: np.ndarray, view: str, centre: Sequence[int]) -> np.ndarray:
    # Radiological display: patient right on the image left; anterior / superior at the top.
    if view == "axial":
        return volume[:, :, centre[2]].T  # rows y (anterior at top), columns x
    if view == "coronal":
        return volume[:, centre[1], :].T[::-1]  # rows z (superior at top), columns x
    return volume[centre[0], :, :].T[::-1]  # sagittal: rows z, columns y (anterior at left)


def _display_xy(view: str, index: Sequence[float], shape: Sequence[int]) -> tuple[float, float]:
    """(column, row) of a (continuous) voxel index in ``view``'s slice image."""
    x, y, z = (float(v) for v in index)
    if view == "axial":
        return x, y
    if view == "coronal":
        return x, shape[2] - 1 - z
    return y, shape[2] - 1 - z


def _aspect(view: str, spacing: Sequence[float]) -> float:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def overlay_png(
    pet: np.ndarray,
    cam: np.ndarray,
    view: str,
    *,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    centre: Sequence[int] | None = None,
    title: str = "",
    alpha: float = 0.45,
    mask: np.ndarray | None = None,
    lesion_index: Sequence[float] | None = None,
) -> bytes:
    """One cut of the PET (grey, SUV) through ``centre`` (default: the map's maximum) with the heatmap
    (jet, [0, 1]) on top, the ``mask`` outline and the true lesion centre ``lesion_index`` (continuous
    voxel index on this grid), as PNG bytes."""
    if view not in VIEWS:
        raise InputError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    if pet.shape != cam.shape:
        raise InputError(f"PET shape {pet.shape} differs from heatmap shape {cam.shape}")
    if mask is not None and mask.shape != pet.shape:
        raise InputError(f"mask shape {mask.shape} differs from PET shape {pet.shape}")
    centre = tuple(int(c) for c in (centre if centre is not None else hottest_voxel(cam)))
    if any(not 0 <= c < n for c, n in zip(centre, pet.shape, strict=True)):
        raise InputError(f"cut point {centre} lies outside the volume {pet.shape}")
    fig = Figure(figsize=(4.4, 4.6))
    ax = fig.subplots()
    pet_slice = _slice(pet, view, centre)
    vmax = float(np.percentile(pet[pet > 0], 99.5)) if (pet > 0).any() else 1.0
    aspect = _aspect(view, spacing)
    ax.imshow(pet_slice, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
    heat = np.ma.masked_less(_slice(cam, view, centre), 0.05)  # keep the PET readable where CAM ~ 0
    im = ax.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=alpha, aspect=aspect, interpolation="bilinear")
    if mask is not None:
        m = _slice(np.asarray(mask, dtype=np.float32), view, centre)
        if m.max() > 0 and m.min() < 1:
            ax.contour(m, levels=[0.5], colors="cyan", linewidths=0.8)
    handles = []
    px, py = _display_xy(view, centre, pet.shape)
    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    handles += ax.plot(
        [px],
        [py],
        marker="+",
        color="white",
        markersize=12,
        mew=1.5,
        ls="",
        label="peak",
        path_effects=outline,
    )
    axis = CUT_AXIS[view]
    if lesion_index is not None:
        lx, ly = _display_xy(view, lesion_index, pet.shape)
        off = abs(float(lesion_index[axis]) - centre[axis]) * float(spacing[axis])
        handles += ax.plot(
            [lx],
            [ly],
            marker="o",
            mfc="none",
            mec="lime",
            markersize=14,
            mew=1.5,
            ls="",
            label=f"true lesion centre ({off:.0f} mm off this cut)",
        )
    ax.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=6, frameon=False
    )
    ax.set_xlim(-0.5, pet_slice.shape[1] - 0.5)
    ax.set_ylim(pet_slice.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(f"{title}\n{view} cut through the peak, voxel {list(centre)}".strip(), fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, shrink=0.8, label="Grad-CAM")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    cut = {"view": view, "axis": "xyz"[axis], "index": centre[axis], "centre": list(centre)}
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={PNG_KEY: json.dumps(cut)})
    return buf.getvalue()


def read_cut(png: bytes) -> dict:
    """The cut recorded in a PNG written by :func:`overlay_png` (``{}`` if none)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        text = im.info.get(PNG_KEY)
    return json.loads(text) if text else {}
