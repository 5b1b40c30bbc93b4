"""Synthetic FDOPA PET cohort generator: files, determinism, SUV physics, lesion truth, no label shortcuts,
and a lesion model whose shape features overlap between classes (the label never fixes the shape)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.stats import chi2_contingency
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from gliodeploy.cli import app
from gliodeploy.errors import ConfigError, InputError
from gliodeploy.synth import MANIFEST_COLUMNS, SCANNERS, generate_cohort, generate_subject, plan_cohort
from gliodeploy.synth.anatomy import STRIATUM_ELLIPSOIDS_RAS
from gliodeploy.synth.lesion import (
    DEFAULT_LESION_MODEL,
    N_UNIFORMS,
    SHAPE_FEATURES,
    LesionModel,
    TruncatedLogNormal,
)
from gliodeploy.synth.subject import F18_HALF_LIFE_S, FOV_CENTRE_LPS
from gliodeploy.synth.summary import summarize_cohort

runner = CliRunner()


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _triple(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(";")])


def _suv_array(cohort: Path, row: dict[str, str]) -> tuple[sitk.Image, np.ndarray]:
    """SUVbw [x, y, z] computed the way a reader does: sidecar dose/times + participants.tsv weight."""
    image = sitk.ReadImage(str(cohort / row["image"]))
    sidecar = json.loads((cohort / row["image"].replace(".nii.gz", ".json")).read_text())
    with (cohort / "participants.tsv").open(newline="") as fh:
        weight = {r["participant_id"]: float(r["weight"]) for r in csv.DictReader(fh, delimiter="\t")}[
            row["subject"]
        ]
    assert sidecar["Units"] == "Bq/mL" and sidecar["InjectedRadioactivityUnits"] == "MBq"
    delay = sidecar["ImageDecayCorrectionTime"] - sidecar["InjectionStart"]
    dose_bq = sidecar["InjectedRadioactivity"] * 1e6 * 2.0 ** (-delay / F18_HALF_LIFE_S)
    bqml = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return image, bqml * weight * 1000.0 / dose_bq


def _sphere(image: sitk.Image, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean [x, y, z] mask of voxels within ``radius_mm`` of a physical point."""
    size, spacing, origin = image.GetSize(), np.array(image.GetSpacing()), np.array(image.GetOrigin())
    axes = [origin[a] + spacing[a] * np.arange(size[a]) - centre_mm[a] for a in range(3)]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return d2 <= radius_mm**2


@pytest.fixture(scope="module")
def cohort20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "20", "--seed", "0", "--size", "tiny"])
    assert result.exit_code == 0, result.output
    assert "ground-truth TBRmax ROC AUC" in result.output and "Vereos" in result.output
    # How hard the cohort is: TBRmax and the best single shape feature, all subjects and training site.
    best = [line for line in result.output.splitlines() if "best single shape feature: " in line]
    assert [line.split(" (n=")[0] for line in best] == ["all subjects", "training site"], result.output
    assert all(
        line.split("best single shape feature: ")[1].split(" AUC ")[0] in SHAPE_FEATURES for line in best
    )
    assert "cohort_summary.json" in result.output
    return out


@pytest.fixture(scope="module")
def cohort120(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth120")
    generate_cohort(out, n=120, seed=3, size="tiny", progress=False)
    return out


def test_cli_writes_a_valid_bids_like_cohort(cohort20: Path) -> None:
    rows = _rows(cohort20 / "manifest.csv")
    assert len(rows) == 20
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert [r["subject"] for r in rows] == [f"sub-{i:03d}" for i in range(1, 21)]
    for r in rows:
        assert (cohort20 / r["image"]).is_file() and (cohort20 / r["lesion_mask"]).is_file()
        assert r["image"] == f"{r['subject']}/pet/{r['subject']}_pet.nii.gz"
        sidecar = json.loads((cohort20 / r["subject"] / "pet" / f"{r['subject']}_pet.json").read_text())
        assert sidecar["TracerName"] == "FDOPA" and sidecar["TracerRadionuclide"] == "F18"
        assert sidecar["ImageDecayCorrected"] is True
        assert (
            600 <= sidecar["ScanStart"] <= 1800
            and sidecar["ImageDecayCorrectionTime"] == sidecar["ScanStart"]
        )
        assert sidecar["ManufacturersModelName"] == SCANNERS[r["scanner"]].model_name
        assert (
            0.9 * 2.0 * float(r["weight_kg"])
            <= sidecar["InjectedRadioactivity"]
            <= 1.1 * 2.0 * float(r["weight_kg"])
        )
        assert r["site"] == SCANNERS[r["scanner"]].site
        assert r["split"] == ("train" if r["site"] == "Nancy" else "test")
        assert r["label"] in {"0", "1"} and (r["label"] != r["true_label"]) == (r["label_flipped"] == "1")
        assert 50 <= float(r["weight_kg"]) <= 110
    assert sum(r["split"] == "test" for r in rows) == round(20 * 32 / 196)
    assert {r["scanner"] for r in rows if r["split"] == "train"} == {"Biograph", "Vereos"}
    assert sum(r["label_flipped"] == "1" for r in rows) == 1  # round(5 % of 17) + round(5 % of 3)
    with (cohort20 / "participants.tsv").open(newline="") as fh:
        participants = list(csv.DictReader(fh, delimiter="\t"))
    assert [p["participant_id"] for p in participants] == [r["subject"] for r in rows]
    assert {p["sex"] for p in participants} <= {"M", "F"}
    description = json.loads((cohort20 / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "gliodeploy synth"
    image = sitk.ReadImage(str(cohort20 / rows[0]["image"]))
    scanner = SCANNERS[rows[0]["scanner"]]
    assert image.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(image.GetSpacing(), [4 * v for v in scanner.voxel_mm])
    assert image.GetSize() == tuple(math.ceil(m / 4) for m in scanner.matrix)


def test_same_seed_gives_identical_files_in_parallel_too(cohort20: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_cohort(again, n=20, seed=0, size="tiny", progress=False)
    for name in (
        "manifest.csv",
        "participants.tsv",
        "sub-007/pet/sub-007_pet.nii.gz",
        "sub-013/pet/sub-013_pet.json",
    ):
        assert (again / name).read_bytes() == (cohort20 / name).read_bytes(), name
    parallel = tmp_path / "parallel"
    generate_cohort(parallel, n=20, seed=0, size="tiny", progress=False, workers=2)
    for r in _rows(cohort20 / "manifest.csv"):
        assert (parallel / r["image"]).read_bytes() == (cohort20 / r["image"]).read_bytes(), r["subject"]
    other = tmp_path / "other"
    generate_cohort(other, n=20, seed=1, size="tiny", progress=False)
    assert (other / "manifest.csv").read_bytes() != (cohort20 / "manifest.csv").read_bytes()


def test_refuses_non_empty_folder_unless_overwrite(cohort20: Path, tmp_path: Path) -> None:
    target = tmp_path / "cohort"
    generate_cohort(target, n=6, seed=0, size="tiny", progress=False)
    result = runner.invoke(app, ["synth", "--out", str(target), "--n", "5", "--size", "tiny"])
    assert isinstance(result.exception, InputError) and "not empty" in str(result.exception)
    generate_cohort(target, n=5, seed=0, size="tiny", progress=False, overwrite=True)
    assert len(_rows(target / "manifest.csv")) == 5 and not (target / "sub-006").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing to delete"):
        generate_cohort(foreign, n=5, size="tiny", progress=False, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_bqml_to_suv_gives_fdopa_healthy_brain_and_hot_lesion(cohort20: Path) -> None:
    for r in _rows(cohort20 / "manifest.csv"):
        image, suv = _suv_array(cohort20, r)
        healthy = suv[_sphere(image, _triple(r["contralateral_center_mm"]), 20.0)].mean()
        calibrated = float(r["healthy_brain_suv"]) * float(r["calibration"])
        assert 0.8 <= healthy <= 1.8, r["subject"]
        assert healthy == pytest.approx(calibrated, rel=0.25), r["subject"]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort20 / r["lesion_mask"]))).transpose(2, 1, 0) > 0
        assert mask.any(), r["subject"]
        assert suv[mask].max() > 1.1 * healthy, r["subject"]
        assert suv.min() >= 0.0 and suv.max() < 15.0


def test_lesion_is_where_the_ground_truth_says(cohort20: Path) -> None:
    for r in _rows(cohort20 / "manifest.csv"):
        mask_img = sitk.ReadImage(str(cohort20 / r["lesion_mask"]))
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(mask_img)
        centroid = np.array(stats.GetCentroid(1))
        # Within about one tiny voxel (8 mm); the cavity can eat one side of the lesion.
        assert np.linalg.norm(centroid - _triple(r["lesion_center_mm"])) < 12.0, r["subject"]
        volume_ml = stats.GetPhysicalSize(1) / 1000.0
        assert volume_ml == pytest.approx(float(r["lesion_volume_ml"]), rel=0.6, abs=1.5), r["subject"]


def test_generate_subject_full_size_anatomy() -> None:
    image, sidecar, truth = generate_subject(0, label=1, scanner="Biograph", seed=0, size="full")
    assert image.GetSize() == (128, 128, 109) and np.allclose(image.GetSpacing(), (2.036, 2.036, 2.027))
    assert sidecar["ReconFilterSize"] == 2.0 and sidecar["Units"] == "Bq/mL"
    decay = 2.0 ** (-truth.delay_s / F18_HALF_LIFE_S)
    suv = (
        sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        * truth.weight_kg
        * 1000
        / (truth.injected_dose_bq * decay)
    )
    # The head pose maps template (MNI, LPS) points into the image: the striatum must be hot there.
    head = sitk.Euler3DTransform(
        FOV_CENTRE_LPS, *np.radians(truth.head_rotation_deg), truth.head_translation_mm
    )
    healthy = suv[_sphere(image, np.array(truth.contralateral_center_mm), 20.0)].mean()
    (px, py, pz), _ = STRIATUM_ELLIPSOIDS_RAS[2]  # putamen
    for side in (1, -1):
        putamen = np.array(head.TransformPoint((-side * px, -py, pz)))
        striatal = suv[_sphere(image, putamen, 5.0)].mean()
        assert 0.75 * truth.striatum_suv <= striatal <= 1.15 * truth.striatum_suv and striatal > 1.6 * healthy
        assert 2.0 <= suv[_sphere(image, putamen, 8.0)].max() <= 4.5  # FDOPA striatal SUVmax
    assert truth.lesion_mask.GetSize() == image.GetSize() and truth.tbr_max_true > 1.0


def test_tbr_from_image_separates_classes_and_matches_ground_truth(cohort120: Path) -> None:
    rows = _rows(cohort120 / "manifest.csv")
    tbr_image = []
    for r in rows:
        image, suv = _suv_array(cohort120, r)
        mask = (
            sitk.GetArrayFromImage(sitk.ReadImage(str(cohort120 / r["lesion_mask"]))).transpose(2, 1, 0) > 0
        )
        tbr_image.append(
            suv[mask].max() / suv[_sphere(image, _triple(r["contralateral_center_mm"]), 20.0)].mean()
        )
    true_label = [int(r["true_label"]) for r in rows]
    label = [int(r["label"]) for r in rows]
    truth_tbr = [float(r["tbr_max_true"]) for r in rows]
    assert 0.75 <= roc_auc_score(true_label, truth_tbr) <= 0.97
    auc_image = roc_auc_score(true_label, tbr_image)
    assert 0.7 <= auc_image <= 0.97  # partial volume at 8 mm and noise: not perfect
    assert roc_auc_score(label, tbr_image) < auc_image  # label noise costs AUC
    assert np.corrcoef(truth_tbr, tbr_image)[0, 1] > 0.6


def test_nuisance_variables_do_not_predict_the_label(cohort120: Path) -> None:
    rows = _rows(cohort120 / "manifest.csv")
    label = np.array([int(r["true_label"]) for r in rows])
    translation = np.array([_triple(r["head_translation_mm"]) for r in rows])
    rotation = np.array([_triple(r["head_rotation_deg"]) for r in rows])
    global_bqml = [
        float(sitk.GetArrayViewFromImage(sitk.ReadImage(str(cohort120 / r["image"]))).mean()) for r in rows
    ]
    nuisances = {
        "subject index": np.arange(len(rows)),
        "|translation|": np.linalg.norm(translation, axis=1),
        "translation x": translation[:, 0],
        "translation z": translation[:, 2],
        "|rotation|": np.linalg.norm(rotation, axis=1),
        "weight": [float(r["weight_kg"]) for r in rows],
        "mean Bq/mL": global_bqml,
        "lesion side": [
            float(_triple(r["lesion_center_mm"])[0] > _triple(r["contralateral_center_mm"])[0]) for r in rows
        ],
    }
    for name, score in nuisances.items():
        assert abs(roc_auc_score(label, score) - 0.5) < 0.15, name
    for site, scanners in (("Nancy", ("Biograph", "Vereos")), ("Paris", ("DiscoveryMI", "Vision"))):
        site_rows = [r for r in rows if r["site"] == site]
        table = [
            [sum(r["scanner"] == s and r["true_label"] == c for r in site_rows) for c in "01"]
            for s in scanners
        ]
        assert chi2_contingency(table, correction=False).pvalue > 0.5, (site, table)
        for c in range(2):  # about half/half per class
            assert abs(table[0][c] - table[1][c]) <= 1
    assert roc_auc_score(label, [float(r["tbr_max_true"]) for r in rows]) > 0.75  # the physics does


def test_plan_matches_the_study_design() -> None:
    plan = plan_cohort(196, seed=0)
    train = [p for p in plan if p.split == "train"]
    test = [p for p in plan if p.split == "test"]
    assert len(train) == 164 and len(test) == 32
    assert sum(p.true_label for p in train) == 118 and sum(p.true_label for p in test) == 26
    assert sum(p.label_flipped for p in train) == 8 and sum(p.label_flipped for p in test) == 2
    assert {p.site for p in test} == {"Paris"} and {p.scanner for p in test} == {"DiscoveryMI", "Vision"}
    assert not any(p.dicom for p in plan)
    assert sum(p.dicom for p in plan_cohort(50, seed=0, dicom_fraction=0.2)) == 10
    assert plan == plan_cohort(196, seed=0) and plan != plan_cohort(196, seed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 3}, "n must be"),
        ({"n": 20, "test_fraction": 1.0}, "test_fraction"),
        ({"n": 20, "label_noise": 0.6}, "label_noise"),
        ({"n": 20, "dicom_fraction": -0.1}, "dicom_fraction"),
        ({"n": 20, "test_fraction": 0.9}, "training subjects"),
    ],
)
def test_plan_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_cohort(**kwargs)


def test_bad_arguments_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label must be"):
        generate_subject(0, label=2, scanner="Biograph", size="tiny")
    with pytest.raises(ConfigError, match="unknown scanner 'Ingenuity'"):
        generate_subject(0, label=1, scanner="Ingenuity", size="tiny")
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        generate_cohort(tmp_path / "x", n=10, size="huge", progress=False)
    with pytest.raises(ConfigError, match="workers"):
        generate_cohort(tmp_path / "x", n=10, size="tiny", workers=0, progress=False)
    assert not (tmp_path / "x").exists()  # nothing written before the arguments are checked


def test_dicom_subjects_read_back_to_the_same_suv_with_load_pet(tmp_path: Path) -> None:
    from gliodeploy.io import load_pet

    manifest = generate_cohort(tmp_path / "c", n=8, seed=2, size="tiny", dicom_fraction=0.5, progress=False)
    rows = _rows(manifest)
    dicom_rows = [r for r in rows if r["image"].endswith("/dicom")]
    assert len(dicom_rows) == 4
    # Vendor conventions: Philips stores counts (CNTS) with private scale factors, the others Bq/mL.
    units = {
        r["scanner"]: pydicom.dcmread(next((tmp_path / "c" / r["image"]).glob("*.dcm"))).Units
        for r in dicom_rows
    }
    assert units == {"Vision": "BQML", "Biograph": "BQML", "Vereos": "CNTS"}
    for r in rows:
        volume = load_pet(tmp_path / "c" / r["image"])  # weight from participants.tsv or PatientWeight
        suv = sitk.GetArrayFromImage(volume.image).transpose(2, 1, 0)
        image = sitk.ReadImage(str(tmp_path / "c" / r["lesion_mask"]))
        assert volume.image.GetSize() == image.GetSize()
        assert np.allclose(volume.image.GetOrigin(), image.GetOrigin(), atol=1e-3)
        healthy = suv[_sphere(volume.image, _triple(r["contralateral_center_mm"]), 20.0)].mean()
        expected = float(r["healthy_brain_suv"]) * float(r["calibration"])
        assert healthy == pytest.approx(expected, rel=0.25), (r["subject"], r["image"])
        if r in dicom_rows:
            assert len(list((tmp_path / "c" / r["image"]).glob("*.dcm"))) == image.GetSize()[2]


def test_package_exports_resolve_lazily() -> None:
    import gliodeploy.synth as synth

    assert sorted(synth.__all__) == sorted(synth._EXPORTS)
    for name in synth.__all__:
        assert getattr(synth, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = synth.nope


# --- lesion model: class-conditional, overlapping shape features ------------------------------------

_CONTINUOUS_SHAPE = ("radius_mm", "edge_width_mm", "texture_amplitude", "necrosis_fraction")


@pytest.mark.parametrize("feature", ("tbr_max", *_CONTINUOUS_SHAPE))
def test_class_distributions_overlap(feature: str) -> None:
    rec = getattr(DEFAULT_LESION_MODEL.recurrence, feature)
    trc = getattr(DEFAULT_LESION_MODEL.trc, feature)
    assert isinstance(rec, TruncatedLogNormal) and isinstance(trc, TruncatedLogNormal)
    assert max(rec.low, trc.low) < min(rec.high, trc.high)  # the supports overlap
    # Each class reaches into the other's central range: the 5-95 % ranges hold both medians for shape
    # features; TBRmax (the strongest, literature-sized signal) overlaps at the quartiles' tails.
    central = (0.05, 0.95) if feature != "tbr_max" else (0.02, 0.98)
    for a, b in ((rec, trc), (trc, rec)):
        assert b.quantile(central[0]) < a.quantile(0.5) < b.quantile(central[1]), feature


def test_drawn_features_overlap_with_literature_directions() -> None:
    """Many draws per class (no images): every shape feature separates the classes weakly, TBRmax well."""
    rng = np.random.default_rng(0)
    draws = {label: [DEFAULT_LESION_MODEL.draw(rng, label) for _ in range(3000)] for label in (0, 1)}
    labels = [0] * 3000 + [1] * 3000

    def auc(name: str) -> float:
        return roc_auc_score(labels, [getattr(d, name) for label in (0, 1) for d in draws[label]])

    assert 0.82 <= auc("tbr_max") <= 0.92  # recurrence hotter; about 0.87 on true labels
    # Recurrence tends to be nodular (smaller, sharper), more textured, more often necrotic, unifocal.
    for name, higher_in_recurrence in (
        ("radius_mm", False),
        ("edge_width_mm", False),
        ("texture_amplitude", True),
        ("necrosis_fraction", True),
        ("n_foci", False),
    ):
        value = auc(name)
        assert (value > 0.5) == higher_in_recurrence, name
        assert 0.52 <= max(value, 1 - value) <= 0.68, (name, value)
    for label in (0, 1):  # no value is fixed by class
        for name in ("radius_mm", "edge_width_mm", "texture_amplitude", "tbr_max"):
            assert len({getattr(d, name) for d in draws[label]}) == 3000, name
        assert 0.1 < np.mean([d.necrosis_fraction > 0 for d in draws[label]]) < 0.5
        assert {d.n_foci for d in draws[label]} == {1, 2, 3}


def test_lesion_draw_uses_a_fixed_number_of_uniforms() -> None:
    """Same uniforms whatever the label and parameters: the rest of the stream never depends on them."""
    ends = []
    for label in (0, 1):
        rng = np.random.default_rng(5)
        DEFAULT_LESION_MODEL.draw(rng, label)
        ends.append(rng.random())
    reference = np.random.default_rng(5)
    reference.random(N_UNIFORMS)
    assert ends == [reference.random()] * 2
    dist = TruncatedLogNormal(2.0, 0.3, 1.0, 3.0)
    assert dist.quantile(0.0) == pytest.approx(1.0) and dist.quantile(1.0) == pytest.approx(3.0)
    assert dist.quantile(0.5) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ConfigError, match="log-normal"):
        TruncatedLogNormal(0.5, 0.3, 1.0, 3.0)


def test_shape_features_are_recorded_and_overlap_in_a_small_cohort(cohort120: Path) -> None:
    rows = _rows(cohort120 / "manifest.csv")
    for name in SHAPE_FEATURES:
        assert name in MANIFEST_COLUMNS
    model = DEFAULT_LESION_MODEL
    for r in rows:
        dist = model.for_label(int(r["true_label"]))
        for name in ("radius_mm", "edge_width_mm", "texture_amplitude"):
            value = float(r["lesion_radius_mm" if name == "radius_mm" else name])
            low, high = getattr(dist, name).low, getattr(dist, name).high
            assert low - 0.01 <= value <= high + 0.01, (r["subject"], name)
        necrosis = float(r["necrosis_fraction"])
        assert necrosis == 0 or dist.necrosis_fraction.low - 1e-4 <= necrosis <= dist.necrosis_fraction.high
        assert 1 <= int(r["n_foci"]) <= len(dist.foci)
    true_label = np.array([int(r["true_label"]) for r in rows])
    for name in SHAPE_FEATURES:
        values = np.array([float(r[name]) for r in rows])
        lo, hi = np.percentile(values, [25, 75])
        central = (values >= lo) & (values <= hi)
        assert set(true_label[central]) == {0, 1}, name  # both classes in the feature's central range
        if name in ("necrosis_fraction", "n_foci"):  # necrotic cores and multifocal lesions in both classes
            floor = 0 if name == "necrosis_fraction" else 1
            assert set(true_label[values > floor]) == {0, 1}, name


def test_summary_reports_the_best_shape_feature(cohort120: Path) -> None:
    summary = summarize_cohort(cohort120 / "manifest.csv")
    rows = _rows(cohort120 / "manifest.csv")
    for group, members in (
        (summary.overall, rows),
        (summary.training, [r for r in rows if r["split"] == "train"]),
    ):
        assert group.n == len(members) and set(group.shape_auc_observed) == set(SHAPE_FEATURES)
        name, auc = group.best_shape_feature
        assert auc == max(group.shape_auc_observed.values())
        raw = roc_auc_score([int(r["label"]) for r in members], [float(r[name]) for r in members])
        assert auc == pytest.approx(max(raw, 1 - raw))
        assert 0.5 <= auc < group.tbr_auc_observed  # no shape shortcut beats the uptake ratio here
    assert summary.auc_observed == summary.overall.tbr_auc_observed
    saved = json.loads((cohort120 / "cohort_summary.json").read_text())
    assert saved["separability"] == {
        "all": summary.overall.to_dict(),
        "training_site": summary.training.to_dict(),
    }
    assert LesionModel.from_dict(saved["lesion_model"]) == DEFAULT_LESION_MODEL and saved["n"] == 120


def test_summary_of_a_manifest_without_shape_features(cohort20: Path, tmp_path: Path) -> None:
    rows = _rows(cohort20 / "manifest.csv")
    old = [c for c in MANIFEST_COLUMNS if c not in SHAPE_FEATURES or c == "lesion_volume_ml"]
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize_cohort(path)
    assert list(summary.overall.shape_auc_observed) == ["lesion_volume_ml"]
    assert summary.auc_observed == summarize_cohort(cohort20 / "manifest.csv").auc_observed
    with pytest.raises(InputError, match="not a synthetic cohort manifest"):
        path.write_text("subject,image,label\nsub-001,a.nii.gz,1\n")
        summarize_cohort(path)


def test_satellite_foci_keep_the_main_focus_centre_and_tbr() -> None:
    """Same subject, 1 vs 3 foci (same uniforms, so same main focus): the mask grows, the centre stays."""
    models = {
        k: dataclasses.replace(
            DEFAULT_LESION_MODEL,
            recurrence=dataclasses.replace(DEFAULT_LESION_MODEL.recurrence, foci=foci),
        )
        for k, foci in ((1, (1.0, 0.0, 0.0)), (3, (0.0, 0.0, 1.0)))
    }
    truths = {
        k: generate_subject(4, label=1, scanner="Vereos", seed=0, size="tiny", lesion_model=m).truth
        for k, m in models.items()
    }
    assert truths[1].n_foci == 1 and truths[3].n_foci == 3
    assert truths[3].lesion_center_mm == truths[1].lesion_center_mm
    assert truths[3].lesion_radius_mm == truths[1].lesion_radius_mm
    assert truths[3].lesion_volume_ml > truths[1].lesion_volume_ml
    assert truths[3].tbr_max_true == pytest.approx(truths[1].tbr_max_true, rel=0.1)
