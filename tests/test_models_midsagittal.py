"""The in-graph mid-sagittal plane: it finds a turned and tilted head's plane, and the asymmetry uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from gliodeploy.models.lesionnet import Asymmetry
from gliodeploy.models.midsagittal import MidSagittalPlane, brain_centroid, reflect

SHAPE = (40, 48, 32)
SPACING = (4.0, 4.0, 4.0)


def _head(yaw_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """A left-right symmetric brain (egg-shaped ellipsoid, longer front to back, with two hot 'striata'
    side by side, a fainter pair higher up and a frontal hot band on the midline), turned by yaw
    (about z) and tilted by roll (about y)."""
    c = (np.asarray(SHAPE) - 1) / 2
    x, y, z = np.meshgrid(*[np.arange(n) - c[i] for i, n in enumerate(SHAPE)], indexing="ij")
    brain = (x / 15) ** 2 + (y / (20 - 0.08 * y)) ** 2 + (z / 12) ** 2 <= 1
    vol = 1.0 * brain
    for side in (-1, 1):
        vol[(x - 5 * side) ** 2 + (y - 4) ** 2 + z**2 <= 6] = 2.5
        vol[((x - 10 * side) ** 2 + y**2 + (z - 6) ** 2 <= 5) & brain] = 1.6  # a second, higher pair
    vol[(np.abs(x) <= 1) & (y < -10) & brain] = 1.8
    a, b = math.radians(yaw_deg), math.radians(roll_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rot = rz @ ry  # output voxel o samples the straight head at c + R^T (o - c): the head turned by R
    out = ndimage.affine_transform(vol, rot.T, offset=c - rot.T @ c, order=1)
    return out.astype(np.float32)


def test_reflection_about_the_grid_plane_is_the_flip() -> None:
    x = torch.rand((2, 1, *SHAPE))
    centre = torch.tensor([[(SHAPE[0] - 1) / 2, 3.0, 7.0]] * 2)
    normal = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    torch.testing.assert_close(reflect(x, normal, centre, SPACING), torch.flip(x, dims=(2,)))


def test_centroid_of_a_block() -> None:
    x = torch.zeros((1, 1, *SHAPE))
    x[:, :, 4:9, 10:21, 2:5] = 3.0
    torch.testing.assert_close(brain_centroid(x), torch.tensor([[6.0, 15.0, 3.0]]))


@pytest.mark.parametrize(("yaw", "roll"), [(0.0, 0.0), (9.0, 0.0), (-7.0, 5.0), (4.0, -10.0)])
def test_plane_recovers_the_heads_yaw_and_roll(yaw: float, roll: float) -> None:
    x = torch.from_numpy(_head(yaw, roll))[None, None]
    est_yaw, est_roll, _ = MidSagittalPlane(SPACING).angles(x)
    assert math.degrees(est_yaw.item()) == pytest.approx(yaw, abs=1.5)
    assert math.degrees(est_roll.item()) == pytest.approx(roll, abs=1.5)


def test_midsagittal_mirror_cancels_the_striata_of_a_turned_head() -> None:
    """Turned by 12 deg, the grid flip compares one striatum with the brain beside the other (a ratio
    of 2.5: a false lesion, +-4 mm tolerance); the reflection about the estimated plane compares every
    place of this symmetric head with its twin (ratio 1 everywhere)."""
    x = torch.from_numpy(_head(12.0, 4.0))[None, None] / 4  # the "tbr" input: healthy brain at 0.25
    grid = Asymmetry(window=(3, 3, 3), mode="ratio", floor=0.25)(x)[0, 1]
    plane = Asymmetry(window=(3, 3, 3), mode="ratio", floor=0.25, mirror="midsagittal", spacing=SPACING)(x)
    striata = x[0, 0] > 0.5
    assert grid[striata].max().item() > 2.0
    assert plane[0, 1].max().item() == pytest.approx(1.0, abs=0.05)
    assert torch.isfinite(plane).all()
    with pytest.raises(ValueError, match="asymmetry mirror"):
        Asymmetry(mirror="atlas")


def test_batch_members_get_their_own_plane() -> None:
    x = torch.from_numpy(np.stack([_head(8.0, 0.0), _head(-8.0, 0.0)]))[:, None]
    yaw, _, _ = MidSagittalPlane(SPACING).angles(x)
    assert [round(math.degrees(v)) for v in yaw.tolist()] == pytest.approx([8, -8], abs=1.5)
