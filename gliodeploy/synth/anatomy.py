"""Head anatomy for synthetic FDOPA PET: MNI152 2009 tissue maps plus synthetic skull, scalp, face and neck.

nilearn ships the MNI152 2009 grey/white-matter templates and brain mask in its wheel (no download).
They are loaded once per process, turned into LPS world coordinates (SimpleITK's convention, identity
direction) and block-averaged to the working voxel size of the requested cohort size. Structures the
templates lack (striatum nuclei, skull, scalp, face, neck) are modelled as distance shells and
ellipsoids at their MNI coordinates. All arrays are float32 indexed ``[x, y, z]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Striatal nuclei as ellipsoids in MNI RAS mm: (centre, semi-axes). Both hemispheres are used (+/- x).
STRIATUM_ELLIPSOIDS_RAS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((13.0, 13.0, 9.0), (4.5, 8.0, 7.5)),  # caudate head
    ((16.0, -3.0, 18.0), (3.5, 9.0, 4.5)),  # caudate body
    ((25.0, 2.0, 1.0), (6.0, 14.0, 9.0)),  # putamen
)
#: Working grid extent in LPS mm (x, y, z), wider than the MNI brain box to hold the face and neck.
WORK_EXTENT_LPS: tuple[tuple[float, float], ...] = ((-98.0, 98.0), (-114.0, 134.0), (-150.0, 116.0))
_FACE_RAS = ((0.0, 62.0, -38.0), (52.0, 42.0, 48.0))  # face / jaw ellipsoid (centre, semi-axes)
_NECK_RAS = ((0.0, -12.0), (52.0, 50.0), (-150.0, -45.0))  # neck: centre xy, semi-axes xy, z range


@dataclass(frozen=True)
class Anatomy:
    """Tissue maps on one working grid (LPS world mm, identity direction), float32 ``[x, y, z]``.

    Attributes:
        spacing: voxel size (mm, isotropic).
        origin: LPS position (mm) of voxel ``[0, 0, 0]``.
        brain: brain fraction (0-1) of each voxel.
        gm, wm, csf: grey matter, white matter and CSF fractions inside the brain (sum <= brain).
        striatum: striatal fraction (0-1), caudate + putamen ellipsoids.
        skull, scalp, soft_tissue: extracranial compartments (0-1), mutually exclusive.
        outside_mm: signed distance to the brain surface (mm, > 0 outside the brain).
        healthy_region: boolean mask of healthy-brain reference voxels (whole voxels of brain
            outside the striatum); the healthy-brain mean SUV is defined on it.
        lesion_sites: candidate lesion centres (LPS mm), ``[N, 3]``: deep supratentorial
            parenchyma at least 20 mm from the striatum and 15 mm off the midline.
    """

    spacing: float
    origin: tuple[float, float, float]
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    striatum: np.ndarray
    skull: np.ndarray
    scalp: np.ndarray
    soft_tissue: np.ndarray
    outside_mm: np.ndarray
    lesion_sites: np.ndarray
    healthy_region: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(X, Y, Z)``."""
        return self.brain.shape  # type: ignore[return-value]

    def coords(self, axis: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """LPS coordinates (mm) of voxel centres ``lo:hi`` along ``axis``."""
        hi = self.shape[axis] if hi is None else hi
        return (self.origin[axis] + self.spacing * np.arange(lo, hi)).astype(np.float32)

    def index_of(self, point_lps: np.ndarray) -> np.ndarray:
        """Nearest voxel index of an LPS point (not clipped)."""
        return np.rint((np.asarray(point_lps) - np.asarray(self.origin)) / self.spacing).astype(int)

    def to_image(self, array_xyz: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array_xyz`` on this grid."""
        img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
        img.SetSpacing((self.spacing,) * 3)
        img.SetOrigin(self.origin)
        return img


@functools.lru_cache(maxsize=1)
def _templates_1mm() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """GM, WM and brain mask at 1 mm, flipped from RAS to LPS order, and the LPS origin."""
    from nilearn import datasets  # heavy import (~2 s): only when a cohort is generated

    imgs = [
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
        datasets.load_mni152_brain_mask(resolution=1),
    ]
    affine = imgs[0].affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError(f"unexpected MNI152 template affine {affine.tolist()}")  # a nilearn change, a bug
    arrays = [np.asarray(img.get_fdata(dtype=np.float32))[::-1, ::-1, :] for img in imgs]
    shape = arrays[0].shape
    # RAS (x, y) -> LPS (-x, -y); after flipping, index 0 holds the former last voxel.
    origin = (
        -(affine[0, 3] + shape[0] - 1),
        -(affine[1, 3] + shape[1] - 1),
        float(affine[2, 3]),
    )
    gm, wm, mask = arrays
    return gm, wm, (mask > 0.5).astype(np.float32), origin


def _place_on_work_grid(arr_1mm: np.ndarray, origin_1mm: tuple[float, float, float], step: int) -> np.ndarray:
    """Pad a 1 mm LPS array into the working extent, then block-average by ``step`` voxels."""
    lo = [int(round(WORK_EXTENT_LPS[a][0] - origin_1mm[a])) for a in range(3)]
    n = [int(round((WORK_EXTENT_LPS[a][1] - WORK_EXTENT_LPS[a][0]) / step)) * step for a in range(3)]
    out = np.zeros(n, dtype=np.float32)
    src = tuple(slice(max(lo[a], 0), min(lo[a] + n[a], arr_1mm.shape[a])) for a in range(3))
    dst = tuple(slice(s.start - lo[a], s.stop - lo[a]) for a, s in enumerate(src))
    out[dst] = arr_1mm[src]
    x, y, z = (s // step for s in n)
    return out.reshape(x, step, y, step, z, step).mean(axis=(1, 3, 5), dtype=np.float32)


def _ellipsoid(anat_shape, origin, spacing, centre_lps, axes, edge_mm: float) -> np.ndarray:
    """Soft ellipsoid indicator (logistic edge of ``edge_mm``)."""
    g = [origin[a] + spacing * np.arange(anat_shape[a], dtype=np.float32) - centre_lps[a] for a in range(3)]
    q = np.sqrt(
        (g[0][:, None, None] / axes[0]) ** 2
        + (g[1][None, :, None] / axes[1]) ** 2
        + (g[2][None, None, :] / axes[2]) ** 2
    )
    scale = float(np.mean(axes))
    return (1.0 / (1.0 + np.exp(np.clip((q - 1.0) * scale / edge_mm, -30, 30)))).astype(np.float32)


def _ras_to_lps(p: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-p[0], -p[1], p[2])


@functools.lru_cache(maxsize=4)
def load_anatomy(spacing_mm: int) -> Anatomy:
    """The tissue maps at ``spacing_mm`` (integer, 1-8 mm), built once per process and cached.

    Args:
        spacing_mm: working voxel size; block-averaging factor of the 1 mm templates.
    """
    if int(spacing_mm) != spacing_mm or not 1 <= spacing_mm <= 8:
        raise ValueError(f"working spacing must be an integer number of mm in 1..8, got {spacing_mm}")
    step = int(spacing_mm)
    gm1, wm1, mask1, origin1 = _templates_1mm()
    brain = _place_on_work_grid(mask1, origin1, step)
    gm = np.minimum(_place_on_work_grid(gm1 * mask1, origin1, step), brain)
    wm = np.minimum(_place_on_work_grid(wm1 * mask1, origin1, step), brain - gm)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    origin = tuple(WORK_EXTENT_LPS[a][0] + (step - 1) / 2.0 for a in range(3))
    shape = brain.shape
    sp = float(step)

    striatum = np.zeros(shape, np.float32)
    for centre, axes in STRIATUM_ELLIPSOIDS_RAS:
        for side in (1.0, -1.0):
            c = _ras_to_lps((side * centre[0], centre[1], centre[2]))
            striatum = np.maximum(striatum, _ellipsoid(shape, origin, sp, c, axes, edge_mm=1.0))
    striatum *= brain

    # Signed distance to the brain surface drives the cranial shells (CSF gap, skull, scalp).
    binary = sitk.GetImageFromArray((brain.transpose(2, 1, 0) > 0.5).astype(np.uint8))
    binary.SetSpacing((sp,) * 3)
    dist = sitk.SignedMaurerDistanceMap(
        binary, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    outside = sitk.GetArrayFromImage(dist).transpose(2, 1, 0).astype(np.float32)

    def band(lo: float, hi: float) -> np.ndarray:
        return ((outside > lo) & (outside <= hi)).astype(np.float32)

    skull = band(2.0, 8.0) * (1.0 - brain)
    scalp = band(8.0, 13.0) * (1.0 - brain)
    face = _ellipsoid(shape, origin, sp, _ras_to_lps(_FACE_RAS[0]), _FACE_RAS[1], edge_mm=2.0)
    (nx, ny), (ax, ay), (z0, z1) = _NECK_RAS
    z = origin[2] + sp * np.arange(shape[2], dtype=np.float32)
    neck = _ellipsoid(shape, origin, sp, _ras_to_lps((nx, ny, 0.0)), (ax, ay, 1e6), edge_mm=2.0)
    neck *= ((z >= z0) & (z <= z1)).astype(np.float32)[None, None, :]
    soft = np.clip(np.maximum(face, neck) - skull - scalp - brain, 0.0, 1.0) * (outside > 2.0)

    # Candidate lesion centres: >= 12 mm deep in parenchyma, supratentorial, off the midline and striatum.
    gx, gy, gz = (origin[a] + sp * np.arange(shape[a], dtype=np.float32) for a in range(3))
    X, Y, Z = np.meshgrid(gx, gy, gz, indexing="ij")
    ok = (outside <= -12.0) & (gm + wm > 0.8 * brain) & (brain > 0.9) & (Z > -20.0) & (np.abs(X) >= 15.0)
    for centre, _ in STRIATUM_ELLIPSOIDS_RAS:
        for side in (1.0, -1.0):
            c = _ras_to_lps((side * centre[0], centre[1], centre[2]))
            ok &= (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 >= 20.0**2
    sites = np.stack([X[ok], Y[ok], Z[ok]], axis=1).astype(np.float64)
    if len(sites) < 10:
        raise RuntimeError(f"only {len(sites)} lesion sites at {spacing_mm} mm; anatomy is broken")
    return Anatomy(
        spacing=sp,
        origin=origin,  # type: ignore[arg-type]
        brain=brain,
        gm=gm,
        wm=wm,
        csf=csf,
        striatum=striatum,
        skull=skull,
        scalp=scalp,
        soft_tissue=soft.astype(np.float32),
        outside_mm=outside,
        lesion_sites=sites,
        healthy_region=(brain > 0.9) & (striatum < 0.05),
    )
