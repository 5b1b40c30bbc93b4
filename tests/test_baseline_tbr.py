"""TBR clinical baseline: recovers known uptake ratios on a phantom with a lesion and a striatum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gliodeploy.errors import InputError
from gliodeploy.evaluation.baseline import static_parameters

SPACING = (2.0, 2.0, 2.0)
SHAPE = (72, 84, 64)


def _phantom(tbr: float, *, lesion_mm: tuple[float, float, float] = (-40.0, 20.0, 10.0), seed: int = 0):
    """Ellipsoid brain (SUV 1), two hot striata (SUV 2.5), a spherical lesion (SUV = tbr), 4 mm PSF."""
    rng = np.random.default_rng(seed)
    centre = (np.array(SHAPE) - 1) / 2
    mm = [(np.arange(n) - c) * s for n, c, s in zip(SHAPE, centre, SPACING, strict=True)]
    x, y, z = np.meshgrid(*mm, indexing="ij")
    brain = (x / 65) ** 2 + (y / 80) ** 2 + (z / 58) ** 2 <= 1
    truth = np.where(brain, 1.0, 0.0)
    for side in (-1, 1):  # left and right striatum: 10 x 14 x 12 mm ellipsoids beside the midline
        truth[((x - side * 22) / 7) ** 2 + ((y + 8) / 12) ** 2 + (z / 9) ** 2 <= 1] = 2.5
    lx, ly, lz = lesion_mm
    lesion = (x - lx) ** 2 + (y - ly) ** 2 + (z - lz) ** 2 <= 10**2
    truth[lesion] = tbr
    fwhm_vox = 4.0 / np.array(SPACING)
    img = ndimage.gaussian_filter(truth, fwhm_vox / 2.355) + rng.normal(0, 0.04, SHAPE)
    img = np.where(brain, np.clip(img, 0, None), 0).astype(np.float32)
    return img, brain.astype(np.uint8), lesion


@pytest.mark.parametrize("tbr", [1.3, 2.2, 3.0])
def test_recovers_known_tbr_and_finds_the_lesion(tbr: float) -> None:
    img, brain, lesion = _phantom(tbr)
    p = static_parameters(img, brain, SPACING)
    assert p.reference_suv == pytest.approx(1.0, rel=0.05)
    assert p.tbr_max == pytest.approx(tbr, rel=0.12)  # peak + noise maximum: slightly above truth
    assert p.striatum_suv_max == pytest.approx(2.5, rel=0.12)
    assert p.tsr == pytest.approx(tbr / 2.5, rel=0.15)
    if tbr > 1.6:
        assert lesion[p.lesion_voxel]
        # sphere of radius 10 mm = 4.19 mL; threshold at 1.6 x background on the blurred edge
        assert 2.0 < p.mtv_ml < 7.0
        assert 1.6 < p.tbr_mean < tbr
    else:
        assert p.mtv_ml == 0.0


def test_hot_unilateral_lesion_near_the_centre_is_not_taken_for_striatum() -> None:
    img, brain, lesion = _phantom(4.0, lesion_mm=(-20.0, 22.0, 0.0))  # hotter than striatum, central
    p = static_parameters(img, brain, SPACING)
    assert lesion[p.lesion_voxel]
    assert p.striatum_suv_max == pytest.approx(2.5, rel=0.12)
    assert p.tbr_max == pytest.approx(4.0, rel=0.12)


def test_tbr_orders_scans_by_true_uptake() -> None:
    values = [
        static_parameters(*_phantom(t, seed=s)[:2], SPACING).tbr_max for s, t in enumerate((1.2, 1.8, 2.6))
    ]
    assert values == sorted(values)


def test_bad_volumes_raise_input_error() -> None:
    img, brain, _ = _phantom(2.0)
    with pytest.raises(InputError, match="3-D"):
        static_parameters(img[..., 0], None, SPACING)
    with pytest.raises(InputError, match="mask shape"):
        static_parameters(img, brain[:-1], SPACING)
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        static_parameters(bad, brain, SPACING)


def test_recovers_generated_tbr_on_a_synthetic_cohort(tmp_path) -> None:
    """On simulated FDOPA scans (4 mm, scanner blur and noise) the automatic reference matches the
    simulator's healthy-brain SUV, and found lesions have TBRmax close to the generated one (lower:
    the truth is measured on the unblurred map)."""
    import csv
    import warnings

    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import PreprocessConfig, preprocess
    from gliodeploy.synth import generate_cohort

    manifest = generate_cohort(tmp_path / "cohort", n=6, seed=1, size="small", progress=False)
    cfg = PreprocessConfig.demo()
    found = 0
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        pet = load_pet(manifest.parent / row["image"], weight_kg=float(row["weight_kg"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few % of the mask (neck) cut by the grid
            pre = preprocess(pet.image, cfg)
        p = static_parameters(pre.array, pre.mask, cfg.spacing)
        assert p.reference_suv == pytest.approx(float(row["healthy_brain_suv"]), rel=0.1)
        centre = np.array([float(v) for v in row["lesion_center_mm"].split(";")])
        hot = np.array(pre.grid.TransformIndexToPhysicalPoint(p.lesion_voxel))
        if np.linalg.norm(hot - centre) < 15.0:
            found += 1
            assert p.tbr_max == pytest.approx(float(row["tbr_max_true"]), rel=0.3)
    assert found >= 4
