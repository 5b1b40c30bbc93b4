"""The brain's mid-sagittal plane, estimated inside the network, and the reflection about it.

A left-right comparison (:class:`gliodeploy.models.lesionnet.Asymmetry`) needs each place's mirror
position. Flipping the array's x axis mirrors about the grid's sagittal plane, which is the brain's
only when the head lies straight. A head turned by a few degrees (yaw, about the scanner's axis) or
tilted sideways (roll) puts the true mirror position of a frontal or occipital place 1-2 cm away from
the flipped one: a lesion there is compared with itself or with the wrong structure. Symmetry-plane
estimation is the standard remedy in brain-asymmetry analysis.

How (no parameters; ONNX opset 18: sums, trigonometry, ``Floor``, ``Gather``, ``Softmax``):

* The plane passes through the brain's centroid (the input is brain-masked, zero outside).
* Yaw is found on the **axial projection** (sum over z): a rotation about z rotates it by the same
  angle, and a roll changes it only to second order. Roll is then found on the **coronal projection**
  (sum over y) of the volume sheared back by that yaw, so that the sum runs along the head's own
  front-back lines (without the shear a turned head smears the coronal projection and hides the roll).
* For each candidate angle (every ``step_deg`` within ``+-span_deg``) the projection is reflected about
  the line through the centroid and correlated with itself; the most symmetric line wins. Two small
  2-D searches instead of a 3-D one.
* The volume is then reflected about the plane with those two angles (an affine map, every axis
  computed separately and broadcast), with trilinear interpolation.
* Everything is continuous in the input (linear interpolation, a soft argmax over the candidates), so
  ONNX Runtime and PyTorch, whose arithmetic differs in the last bits, choose the same plane.

On the synthetic learning-curve cohort (500 scans; head rotations N(0, 5 deg) per axis, clipped at
15 deg) the estimate is off the true yaw by 0.5 deg on average (95 % within 1.6 deg) and off the true
roll by 0.2 deg (95 % within 0.7 deg); ~30 ms per scan on one CPU core at 64x64x41 (the reflection
included).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn


def _arange(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, dtype=like.dtype, device=like.device)


def brain_centroid(x: torch.Tensor) -> torch.Tensor:
    """Centroid ``[B, 3]`` (voxel indices) of the non-zero voxels of a brain-masked ``[B, 1, X, Y, Z]``."""
    w = (x[:, 0] > 0).to(x.dtype)
    total = torch.clamp(w.sum((1, 2, 3)), min=1.0)
    profiles = (w.sum((2, 3)), w.sum((1, 3)), w.sum((1, 2)))  # per axis: [B, n]
    return torch.stack([(p * _arange(p.shape[1], x)).sum(1) / total for p in profiles], dim=1)


#: Temperature of the soft argmax over candidate angles (correlation units): neighbouring candidates
#: differ by ~1e-3-1e-2, so the soft argmax refines between them, and the estimate is a continuous
#: function of the input (a hard argmax flips between near-tied candidates on a 1e-7 float difference,
#: so ONNX Runtime and PyTorch could pick different planes).
SOFTMAX_TEMPERATURE = 1e-3


def _interpolate(flat: torch.Tensor, coords: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """Multilinear interpolation of ``flat`` ``[B, C, prod(sizes)]`` (a C-order grid of ``sizes``) at the
    continuous voxel coordinates ``coords`` (one tensor per axis, broadcastable to ``[B, *S]``); zero
    off the grid. Returns ``[B, C, *S]``.

    Linear, not nearest-neighbour: the result is continuous in the coordinates, so a 1e-7 difference
    between two runtimes' arithmetic gives a 1e-7 difference here, never another voxel.
    """
    lows = [torch.floor(c) for c in coords]
    fracs = [c - low for c, low in zip(coords, lows, strict=True)]
    out: torch.Tensor | None = None
    for corner in itertools.product((0, 1), repeat=len(sizes)):
        index: torch.Tensor | None = None
        weight: torch.Tensor | None = None
        for low, frac, size, step in zip(lows, fracs, sizes, corner, strict=True):
            at = low + step
            w = (frac if step else 1 - frac) * ((at >= 0) & (at <= size - 1)).to(frac.dtype)
            at = torch.clamp(at, 0, size - 1)
            index = at if index is None else index * size + at
            weight = w if weight is None else weight * w
        assert index is not None and weight is not None
        b = flat.shape[0]
        index, weight = torch.broadcast_tensors(index, weight)
        shape = (b, *index.shape[1:])
        index, weight = index.expand(shape), weight.expand(shape)
        values = torch.gather(flat, 2, index.long().reshape(b, 1, -1).expand(b, flat.shape[1], -1))
        term = values.reshape(b, flat.shape[1], *shape[1:]) * weight[:, None]
        out = term if out is None else out + term
    assert out is not None
    return out


def _most_symmetric_angle(
    image: torch.Tensor,
    cu: torch.Tensor,
    cv: torch.Tensor,
    spacing: tuple[float, float],
    angles: torch.Tensor,
) -> torch.Tensor:
    """Angle ``[B]`` (radians) of the normal ``(cos, sin)`` of the most symmetric line through ``(cu, cv)``
    (a soft argmax of the mirror correlation over the candidate ``angles``).

    ``image`` ``[B, U, V]``; the reflection is done in millimetres (``spacing`` of the two axes).
    """
    b, u_size, v_size = image.shape
    su, sv = spacing
    cos, sin = torch.cos(angles)[None, :, None, None], torch.sin(angles)[None, :, None, None]
    u = _arange(u_size, image)[None, None, :, None] - cu[:, None, None, None]
    v = _arange(v_size, image)[None, None, None, :] - cv[:, None, None, None]
    # reflection matrix I - 2 m m^T (m = the unit normal), in voxel units of each axis
    src_u = cu[:, None, None, None] + (1 - 2 * cos * cos) * u - 2 * cos * sin * v * (sv / su)
    src_v = cv[:, None, None, None] - 2 * cos * sin * u * (su / sv) + (1 - 2 * sin * sin) * v
    flat = image.reshape(b, 1, u_size * v_size)
    mirrored = _interpolate(flat, (src_u, src_v), (u_size, v_size)).reshape(b, angles.shape[0], -1)
    # The correlation in float64: runtimes sum in different orders, and the soft argmax divides the
    # correlation by SOFTMAX_TEMPERATURE, which would magnify a float32 rounding difference.
    a = flat.double() - flat.double().mean(2, keepdim=True)
    m = mirrored.double() - mirrored.double().mean(2, keepdim=True)
    corr = (m * a).sum(2) / torch.clamp(torch.sqrt((m * m).sum(2) * (a * a).sum(2)), min=1e-12)
    weights = torch.softmax(corr / SOFTMAX_TEMPERATURE, dim=1).to(image.dtype)
    return (weights * angles[None, :]).sum(1)


def _straightened(
    volume: torch.Tensor, yaw: torch.Tensor, centre: torch.Tensor, spacing: tuple[float, float]
) -> torch.Tensor:
    """``volume`` ``[B, X, Y, Z]`` sheared so that the head's front-back lines (turned by ``yaw``) run
    along the y axis: a coronal projection (sum over y) then sums along them, as it would for a head
    that lies straight, and shows the roll alone (to first order in yaw)."""
    b, nx, ny, nz = volume.shape
    y_mm = (_arange(ny, volume)[None, :] - centre[:, 1:2]) * spacing[1]  # [B, Y]
    shift = y_mm * torch.tan(yaw)[:, None] / spacing[0]  # x voxels to move back, per y
    src_x = (_arange(nx, volume)[None, :, None] - shift[:, None, :])[..., None]  # [B, X, Y, 1]
    src_y = _arange(ny, volume)[None, None, :, None]
    src_z = _arange(nz, volume)[None, None, None, :]
    flat = volume.reshape(b, 1, -1)
    return _interpolate(flat, (src_x, src_y, src_z), (nx, ny, nz))[:, 0]


def reflect(
    volume: torch.Tensor, normal: torch.Tensor, centre: torch.Tensor, spacing: Sequence[float]
) -> torch.Tensor:
    """``volume`` ``[B, C, X, Y, Z]`` reflected about the plane through ``centre`` ``[B, 3]`` (voxels)
    with unit ``normal`` ``[B, 3]`` (millimetre frame); trilinear, zero where the mirror falls off the
    grid."""
    b, c, *sizes = volume.shape
    axes = [
        (_arange(n, volume)[None, :] - centre[:, i : i + 1]) * float(spacing[i]) for i, n in enumerate(sizes)
    ]
    shapes = ((b, sizes[0], 1, 1), (b, 1, sizes[1], 1), (b, 1, 1, sizes[2]))
    p = [axes[i].reshape(shapes[i]) for i in range(3)]  # millimetres from the centre, one axis each
    n = [normal[:, i].reshape(b, 1, 1, 1) for i in range(3)]
    distance = p[0] * n[0] + p[1] * n[1] + p[2] * n[2]  # signed distance to the plane, [B, X, Y, Z]
    coords = [
        (p[i] - 2 * distance * n[i]) / float(spacing[i]) + centre[:, i].reshape(b, 1, 1, 1) for i in range(3)
    ]
    return _interpolate(volume.reshape(b, c, -1), coords, sizes).reshape(volume.shape)


class MidSagittalPlane(nn.Module):
    """``forward(x) -> (normal [B, 3], centre [B, 3])``: the mid-sagittal plane of a brain-masked batch.

    Args:
        spacing: voxel size (mm) of the grid.
        span_deg: largest yaw / roll searched (either way).
        step_deg: angular step of the search.
    """

    def __init__(self, spacing: Sequence[float], span_deg: float = 15.0, step_deg: float = 1.0) -> None:
        super().__init__()
        self.spacing = tuple(float(s) for s in spacing)
        self.span_deg = float(span_deg)
        self.step_deg = float(step_deg)

    def extra_repr(self) -> str:
        return f"span_deg={self.span_deg:g}, step_deg={self.step_deg:g}"

    def angles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(yaw, roll, centre)``: yaw (about z), roll (about y) in radians ``[B]``; centroid ``[B, 3]``."""
        centre = brain_centroid(x)
        k = round(self.span_deg / self.step_deg)
        candidates = _arange(2 * k + 1, x) * math.radians(self.step_deg) - k * math.radians(self.step_deg)
        sx, sy, sz = self.spacing
        yaw = _most_symmetric_angle(x[:, 0].sum(3), centre[:, 0], centre[:, 1], (sx, sy), candidates)
        coronal = _straightened(x[:, 0], yaw, centre, (sx, sy)).sum(2)  # [B, X, Z]
        # in the (x, z) plane the normal (cos roll, -sin roll) has angle -roll
        roll = -_most_symmetric_angle(coronal, centre[:, 0], centre[:, 2], (sx, sz), candidates)
        return yaw, roll, centre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yaw, roll, centre = self.angles(x)
        normal = torch.stack(
            [torch.cos(yaw) * torch.cos(roll), torch.sin(yaw) * torch.cos(roll), -torch.sin(roll)], dim=1
        )
        return normal / torch.clamp(normal.norm(dim=1, keepdim=True), min=1e-12), centre
