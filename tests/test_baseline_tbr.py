"""TBR clinical baseline: recovers known uptake ratios on a phantom with a lesion and a striatum; the
whole striatum (partial-volume rim included) is excluded; reader lesion locations; hotspot miss rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gliodeploy.errors import ConfigError, InputError
from gliodeploy.evaluation.baseline import (
    BaselineSettings,
    analyse,
    describe_lesion_location,
    hotspot_miss_rate,
    static_parameters,
)

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


# --- whole striatum, reader locations, miss rate (4 mm phantoms, like the demo grid) ---------------

SP4 = (4.0, 4.0, 4.0)
SHAPE4 = (36, 42, 32)
#: The rule before the whole-striatum exclusion: half-maximum core + 6 mm, strict mirror symmetry.
OLD_RULE = BaselineSettings(striatum_grow_fraction=0.5, symmetry_tolerance_mm=0.0, exclusion_mm=6.0)


def _mm_grid4() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = (np.array(SHAPE4) - 1) / 2
    mm = [(np.arange(n) - c) * s for n, c, s in zip(SHAPE4, centre, SP4, strict=True)]
    return tuple(np.meshgrid(*mm, indexing="ij"))  # type: ignore[return-value]


def _ball_mm(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    x, y, z = _mm_grid4()
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2


def _tilted(
    lesions: tuple[tuple[tuple[float, float, float], float], ...] = (((-45.0, 30.0, 20.0), 1.4),),
    *,
    shift_mm: float = 8.0,
    seed: int = 0,
):
    """4 mm scan, 8 mm FWHM: brain (SUV 1), putamen + caudate head per side (SUV 2.5), the right caudate
    head ``shift_mm`` off the left one's mirror image (a yawed head), spherical lesions (8 mm radius)
    given as ((x, y, z) mm, SUV)."""
    rng = np.random.default_rng(seed)
    x, y, z = _mm_grid4()
    brain = (x / 65) ** 2 + (y / 80) ** 2 + (z / 58) ** 2 <= 1
    truth = np.where(brain, 1.0, 0.0)
    for side in (-1, 1):
        dy = shift_mm if side == 1 else 0.0
        truth[((x - side * 24) / 6) ** 2 + ((y + 2) / 14) ** 2 + (z / 9) ** 2 <= 1] = 2.5  # putamen
        truth[((x - side * 12) / 5) ** 2 + ((y + 26 + dy) / 8) ** 2 + ((z - 8) / 7) ** 2 <= 1] = (
            2.5  # caudate
        )
    masks = []
    for centre, suv in lesions:
        masks.append(_ball_mm(centre, 8.0))
        truth[masks[-1]] = suv
    img = ndimage.gaussian_filter(truth, 8.0 / 2.355 / np.array(SP4)) + rng.normal(0, 0.03, SHAPE4)
    img = np.where(brain, np.clip(img, 0, None), 0).astype(np.float32)
    return img, brain.astype(np.uint8), masks


def test_striatal_rim_of_a_tilted_head_is_excluded_and_the_faint_lesion_found() -> None:
    """The old rule's hotspot lands on a caudate head that the half-maximum core + 6 mm misses (the head
    is tilted); the whole-striatum exclusion takes that rim in and finds the faint (TRC-like) lesion."""
    img, brain, (lesion,) = _tilted()
    old = analyse(img, brain, SP4, OLD_RULE).parameters
    assert not lesion[old.lesion_voxel]
    new = analyse(img, brain, SP4)
    assert new.striatum[old.lesion_voxel]  # the old hotspot is striatum
    p = new.parameters
    assert lesion[p.lesion_voxel] and p.lesion_source == "automatic" and p.automatic_voxel == p.lesion_voxel
    assert p.tbr_max == pytest.approx(1.4, abs=0.12) and p.mtv_ml == 0.0
    assert new.striatum_core.sum() < new.striatum.sum() < new.excluded.sum()
    assert not (new.excluded & lesion).any()
    # untilted head: both rules find it
    img, brain, (lesion,) = _tilted(shift_mm=0.0)
    assert lesion[analyse(img, brain, SP4, OLD_RULE).parameters.lesion_voxel]
    assert lesion[static_parameters(img, brain, SP4).lesion_voxel]


@pytest.mark.parametrize("suv", [1.4, 3.0])  # 90 % fallback VOI / 1.6 x reference VOI
def test_lesion_voi_never_enters_the_excluded_zone(suv: float) -> None:
    img, brain, (lesion,) = _tilted((((-42.0, -2.0, 0.0), suv),), shift_mm=0.0)  # 5 mm from the putamen
    reg = analyse(img, brain, SP4)
    p = reg.parameters
    assert lesion[p.lesion_voxel]
    assert reg.voi.any() and reg.voi[p.lesion_voxel]
    assert not (reg.voi & reg.excluded).any()
    assert not (reg.reference & reg.excluded).any()
    assert (p.mtv_ml > 0) == (suv > 1.6)
    assert p.tbr_max == pytest.approx(img[reg.voi].max() / p.reference_suv)


def test_reader_point_and_voi_replace_the_automatic_hotspot() -> None:
    faint, decoy = (-45.0, 30.0, 20.0), (40.0, 40.0, -10.0)
    img, brain, (faint_mask, decoy_mask) = _tilted(((faint, 1.5), (decoy, 2.5)), shift_mm=0.0)
    auto = static_parameters(img, brain, SP4)
    assert decoy_mask[auto.lesion_voxel] and auto.lesion_source == "automatic"

    centre = (np.array(SHAPE4) - 1) / 2
    point = np.array(faint) / np.array(SP4) + centre + 1.2  # continuous voxel index, a bit off-centre
    p = static_parameters(img, brain, SP4, reader_point=point)
    assert p.lesion_source == "reader_point" and faint_mask[p.lesion_voxel]
    assert p.automatic_voxel == auto.lesion_voxel  # the automatic hotspot is still recorded
    assert p.tbr_max == pytest.approx(1.5, abs=0.15)
    assert p.tbr_max < auto.tbr_max

    reg = analyse(img, brain, SP4, reader_voi=faint_mask, reader_point=np.array(decoy) / 4 + centre)
    v = reg.parameters
    assert v.lesion_source == "reader_voi"  # a VOI wins over a point
    assert np.array_equal(reg.voi, faint_mask & (brain > 0))
    assert v.suv_max == pytest.approx(float(img[faint_mask].max()))
    assert v.tbr_mean == pytest.approx(float(img[faint_mask].mean()) / v.reference_suv)
    assert faint_mask[v.lesion_voxel] and v.automatic_voxel == auto.lesion_voxel


def test_bad_reader_locations_and_settings_raise_clear_errors() -> None:
    img, brain, _ = _tilted(shift_mm=0.0)
    with pytest.raises(InputError, match="outside the brain mask"):
        static_parameters(img, brain, SP4, reader_point=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="outside the brain mask"):
        static_parameters(img, brain, SP4, reader_point=(99.0, 5.0, 5.0))
    centre = (np.array(SHAPE4) - 1) / 2
    putamen = np.array((-24.0, -2.0, 0.0)) / 4 + centre
    with pytest.raises(InputError, match="excluded zone"):
        static_parameters(img, brain, SP4, reader_point=putamen, reader_radius_mm=4.0)
    with pytest.raises(InputError, match="no voxel inside the brain"):
        static_parameters(img, brain, SP4, reader_voi=np.zeros_like(brain))
    with pytest.raises(InputError, match="VOI shape"):
        static_parameters(img, brain, SP4, reader_voi=brain[:-1])
    with pytest.raises(ConfigError, match="striatum_grow_fraction"):
        BaselineSettings(striatum_grow_fraction=0.6)
    with pytest.raises(ConfigError, match="unknown baseline setting.*exclusion"):
        static_parameters(img, brain, SP4, exclusion=3.0)


def test_hotspot_miss_rate_overall_per_class_and_split() -> None:
    miss = hotspot_miss_rate(
        [5.0, 25.0, None, 30.0, 20.0], [1, 0, 1, 1, 0], ["train", "train", "test", "test", "test"]
    )
    assert miss is not None
    assert (miss["threshold_mm"], miss["n"], miss["n_miss"]) == (20.0, 4, 2)  # no truth: left out
    assert miss["fraction"] == pytest.approx(0.5)
    assert miss["per_class"]["recurrence"] == {"n": 2, "n_miss": 1, "fraction": 0.5}
    assert miss["per_class"]["trc"] == {"n": 2, "n_miss": 1, "fraction": 0.5}  # exactly 20 mm is not a miss
    assert miss["per_split"]["test"]["n_miss"] == 1 and miss["per_split"]["train"]["n"] == 2
    assert hotspot_miss_rate([None, None], [1, 0]) is None
    text = dict(describe_lesion_location({"hotspot_miss": miss, "lesion_sources": {"automatic": 5}}))
    assert text == {
        "hotspot-miss": "The automatic hotspot lies more than 20 mm from the true lesion centre in 2/4 (50%) "
        "scans (recurrence 1/2 (50%), TRC 1/2 (50%)); the true centre comes from the cohort's ground truth."
    }
    sources = {"automatic": 3, "reader_point": 1, "reader_voi": 2}
    assert dict(describe_lesion_location({"lesion_sources": sources}))["lesion-sources"] == (
        "Lesion location: reader VOI in 2, reader point in 1, automatic hotspot in 3 scans."
    )


def test_manifest_reader_locations_go_through_the_grid_geometry(tmp_path) -> None:
    """The evaluate path: LPS mm -> grid voxels through the cached grid origin, a VOI NIfTI on another
    grid resampled with nearest neighbour, sources and miss distances recorded, errors naming the row."""
    from pathlib import Path

    import SimpleITK as sitk

    from gliodeploy.data.manifest import ManifestRow
    from gliodeploy.evaluation.inference import GridVolume, baseline_parameters, baseline_summary

    faint, decoy = (-45.0, 30.0, 20.0), (40.0, 40.0, -10.0)
    img, brain, (faint_mask, decoy_mask) = _tilted(((faint, 1.5), (decoy, 2.5)), shift_mm=0.0)
    origin = tuple(float(v) for v in -(np.array(SHAPE4) - 1) / 2 * np.array(SP4))  # phantom mm = LPS mm
    vol = GridVolume(img, brain, origin)  # type: ignore[arg-type]

    # the reader's VOI on a 2 mm grid (its own geometry), as a NIfTI file
    fine_shape = (72, 84, 64)
    fine_origin = np.array(origin) - 1.0
    idx = np.meshgrid(*[np.arange(n) for n in fine_shape], indexing="ij")
    pos = [fine_origin[a] + 2.0 * idx[a] for a in range(3)]
    sphere = sum((pos[a] - faint[a]) ** 2 for a in range(3)) <= 8.0**2
    voi_img = sitk.GetImageFromArray(sphere.astype(np.uint8).transpose(2, 1, 0))
    voi_img.SetOrigin(tuple(fine_origin.tolist()))
    voi_img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(voi_img, str(tmp_path / "voi.nii.gz"))

    def row(subject: str, line: int, **kw) -> ManifestRow:
        return ManifestRow(subject, Path("x.nii.gz"), 1, "S", "A", "train", line=line, **kw)

    rows = [
        row("point", 2, lesion_mm=faint, truth_lesion_mm=faint),
        row("voi", 3, lesion_voi=tmp_path / "voi.nii.gz", truth_lesion_mm=faint),
        row("auto-miss", 4, truth_lesion_mm=faint),
        row("auto-hit", 5, truth_lesion_mm=decoy),
        row("no-truth", 6),
    ]
    params = baseline_parameters(rows, {r.subject: vol for r in rows}, SP4)
    assert [params[r.subject].lesion_source for r in rows] == [
        "reader_point",
        "reader_voi",
        "automatic",
        "automatic",
        "automatic",
    ]
    assert faint_mask[params["point"].lesion_voxel] and faint_mask[params["voi"].lesion_voxel]
    assert decoy_mask[params["auto-miss"].lesion_voxel]
    for p in params.values():  # the automatic hotspot is the decoy in every scan, in physical mm
        assert np.linalg.norm(np.array(p.automatic_hotspot_mm) - decoy) < 8.0
    errors = [params[r.subject].automatic_hotspot_error_mm for r in rows]
    assert errors[0] > 20 and errors[1] > 20 and errors[2] > 20 and errors[3] < 8 and errors[4] is None
    summary = baseline_summary(rows, params)
    assert summary["lesion_sources"] == {"reader_voi": 1, "reader_point": 1, "automatic": 3}
    assert (summary["hotspot_miss"]["n"], summary["hotspot_miss"]["n_miss"]) == (4, 3)
    assert summary["settings"]["exclusion_mm"] == BaselineSettings().exclusion_mm

    outside_brain = row("e", 7, lesion_mm=(0.0, 0.0, 62.0))  # last grid slice, above the brain
    with pytest.raises(InputError, match=r"line 7 \(subject e\), column lesion_mm: .*outside the brain mask"):
        baseline_parameters([outside_brain], {"e": vol}, SP4)
    with pytest.raises(InputError, match="column lesion_mm: .*outside the model grid"):
        baseline_parameters([row("f", 8, lesion_mm=(500.0, 0.0, 0.0))], {"f": vol}, SP4)
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match=r"line 9 \(subject g\), column lesion_voi: cannot read"):
        baseline_parameters([row("g", 9, lesion_voi=tmp_path / "bad.nii.gz")], {"g": vol}, SP4)
    with pytest.raises(InputError, match="no grid geometry"):
        baseline_parameters([row("h", 10, lesion_mm=faint)], {"h": (img, brain)}, SP4)


def test_report_carries_the_miss_rate_and_lesion_sources(tmp_path) -> None:
    import json

    from gliodeploy.evaluation.evaluate import BootstrapSettings
    from gliodeploy.evaluation.report import ReportInputs, write_report
    from gliodeploy.evaluation.rundata import Predictions

    def scores(n: int, prefix: str, seed: int) -> Predictions:
        labels = (np.arange(n) % 3 != 0).astype(int)
        noise = np.random.default_rng(seed).normal(0, 0.3, n)
        return Predictions(tuple(f"{prefix}-{i}" for i in range(n)), labels, 1.4 + 0.6 * labels + noise)

    miss = hotspot_miss_rate([5.0] * 28 + [30.0, 40.0], [1, 0] * 15, ["train"] * 30)
    summary = {"lesion_sources": {"reader_voi": 1, "reader_point": 0, "automatic": 29}, "hotspot_miss": miss}
    inputs = ReportInputs(
        runs=[],
        baseline_train=scores(30, "s", 0),
        baseline_test=scores(12, "e", 1),
        baseline_summary=summary,
        distribution=[("train", "a", "b", 1), ("train", "a", "b", 0)],
    )
    paths = write_report(inputs, tmp_path, BootstrapSettings(n_resamples=100))
    baseline = json.loads(paths["metrics"].read_text())["baseline"]
    assert baseline["hotspot_miss"]["n_miss"] == 2 and baseline["lesion_sources"]["reader_voi"] == 1
    page = paths["html"].read_text()
    assert "data-baseline='hotspot-miss'>The automatic hotspot lies more than 20 mm" in page
    assert "2/30 (7%) scans (recurrence 1/15 (7%), TRC 1/15 (7%))" in page
    assert "Lesion location: reader VOI in 1" in paths["markdown"].read_text()
