"""PNG overlays of a heatmap on the PET: axial, coronal and sagittal slices through the hottest
attention (model grid, LPS: x = right->left, y = anterior->posterior, z = inferior->superior)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gliodeploy.errors import InputError

VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")


def hottest_voxel(cam: np.ndarray) -> tuple[int, int, int]:
    """Index of the attention maximum (first one on ties)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape))


def _slice(volume: np.ndarray, view: str, centre: tuple[int, int, int]) -> np.ndarray:
    # Radiological display: patient right on the image left; anterior / superior at the top.
    if view == "axial":
        return volume[:, :, centre[2]].T  # rows y (anterior at top), columns x
    if view == "coronal":
        return volume[:, centre[1], :].T[::-1]  # rows z (superior at top), columns x
    return volume[centre[0], :, :].T[::-1]  # sagittal: rows z, columns y (anterior at left)


def _aspect(view: str, spacing: tuple[float, float, float]) -> float:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def overlay_png(
    pet: np.ndarray,
    cam: np.ndarray,
    view: str,
    *,
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    centre: tuple[int, int, int] | None = None,
    title: str = "",
    alpha: float = 0.45,
) -> bytes:
    """One slice of the PET (grey, SUV) with the heatmap (jet, [0, 1]) on top, as PNG bytes."""
    if view not in VIEWS:
        raise InputError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    if pet.shape != cam.shape:
        raise InputError(f"PET shape {pet.shape} differs from heatmap shape {cam.shape}")
    centre = centre or hottest_voxel(cam)
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.subplots()
    pet_slice = _slice(pet, view, centre)
    vmax = float(np.percentile(pet[pet > 0], 99.5)) if (pet > 0).any() else 1.0
    aspect = _aspect(view, spacing)
    ax.imshow(pet_slice, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
    heat = np.ma.masked_less(_slice(cam, view, centre), 0.05)  # keep the PET readable where CAM ~ 0
    im = ax.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=alpha, aspect=aspect, interpolation="bilinear")
    ax.set_axis_off()
    ax.set_title(f"{title}\n{view}, voxel {centre}".strip(), fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, shrink=0.8, label="Grad-CAM")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()
