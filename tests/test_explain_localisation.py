"""Grad-CAM localisation: the explanation's localisation fields on a tiny synthetic subject (a map we
control), PNG cuts through the peak, the cohort summary's counts, and `gliodeploy evaluate
--localisation`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app
from gliodeploy.errors import InputError
from gliodeploy.explain import cohort as cohort_mod
from gliodeploy.explain import explainer as explainer_mod
from gliodeploy.explain.gradcam import GradCam, layer_resolution, resolution_warning
from gliodeploy.explain.localisation import (
    find_peak,
    grid_index,
    localisation_diagnosis,
    localisation_sentence,
    parse_lesion_mm,
    summarise,
    wilson_interval,
)
from gliodeploy.explain.overlay import read_cut

torch = pytest.importorskip("torch")
N_FOLDS = 2


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run_app(app, args)
    return int(exc.value.code or 0)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _point(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(";")])


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny synthetic cohort (seed 0: 3 recurrences and 1 TRC in the test split, both classes in
    train) and a finished 2-fold run of tiny cnn3d models with fixed-seed weights and made-up OOF."""
    from safetensors.torch import save_file

    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("localisation")
    manifest = generate_cohort(root / "cohort", n=10, seed=0, size="tiny", test_fraction=0.4, progress=False)
    cfg = PreprocessConfig.tiny()
    run = root / "run"
    run.mkdir()
    spec = {"name": "cnn3d", "width": 0.125, "kwargs": {"fc_width": 8}}
    plans = {
        "experiment": "tiny-localisation",
        "preprocessing": cfg.to_dict(),
        "model": spec,
        "folds": N_FOLDS,
        "manifest": str(manifest),
    }
    (run / "plans.json").write_text(json.dumps(plans))
    for k in range(N_FOLDS):
        torch.manual_seed(k)
        model = build_model("cnn3d", preprocessing=cfg, width=0.125, fc_width=8)
        (run / f"fold_{k}").mkdir()
        save_file(
            {n: t.contiguous() for n, t in model.state_dict().items()},
            str(run / f"fold_{k}/model.safetensors"),
        )
        (run / f"fold_{k}/done.json").write_text("{}")
    train = [r for r in _rows(manifest) if r["split"] == "train"]
    with open(run / "oof_predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject", "fold", "probability", "label", "scanner", "site"])
        for i, r in enumerate(train):
            w.writerow(
                [
                    r["subject"],
                    i % N_FOLDS,
                    0.3 + 0.4 * int(r["label"]) + 0.01 * i,
                    r["label"],
                    r["scanner"],
                    r["site"],
                ]
            )
    return run, manifest


def test_truth_centre_is_in_the_native_physical_space(cohort_run: tuple[Path, Path]) -> None:
    """The manifest's lesion_center_mm is the truth mask's centroid in SimpleITK (LPS) physical mm."""
    _, manifest = cohort_run
    checked = 0
    for r in _rows(manifest):
        if r["n_foci"] != "1":
            continue
        mask = sitk.ReadImage(str(manifest.parent / r["lesion_mask"])) > 0
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
        centroid = np.array(stats.GetCentroid(1))
        assert np.linalg.norm(centroid - _point(r["lesion_center_mm"])) < max(mask.GetSpacing()), r["subject"]
        checked += 1
    assert checked >= 3


def _fake_gradcam(peak: tuple[int, int, int]):
    """A stand-in for gradcam_models: a Gaussian blob (sigma 1.5 voxels) at ``peak``."""

    def fake(models, volume, *, layer=None, method="gcam"):
        grid = np.indices(volume.shape).astype(np.float64)
        d2 = sum((g - p) ** 2 for g, p in zip(grid, peak, strict=True))
        cam = np.exp(-d2 / (2 * 1.5**2)).astype(np.float32)
        return GradCam(cam[None], np.array([0.8]), "backbone.fake", method, (16, 16, 10))

    return fake


@pytest.mark.parametrize("offset", [(0, 0, 0), (5, 0, 0)])
def test_explanation_localisation_fields(
    cohort_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: tuple[int, ...]
) -> None:
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import PreprocessConfig, preprocess

    run, manifest = cohort_run
    row = next(r for r in _rows(manifest) if r["split"] == "test" and r["true_label"] == "1")
    scan = manifest.parent / row["image"]
    truth = _point(row["lesion_center_mm"])
    pre = preprocess(load_pet(scan).image, PreprocessConfig.tiny())  # what explain_scan computes
    origin, spacing = np.array(pre.grid.GetOrigin()), np.array(pre.grid.GetSpacing())
    peak = tuple(int(v) for v in np.round(grid_index(truth, origin, spacing)) + np.array(offset))
    monkeypatch.setattr(explainer_mod, "gradcam_models", _fake_gradcam(peak))

    result = explainer_mod.explain_scan(run, scan, tmp_path, manifest=manifest)
    summary = json.loads(Path(result.files["json"]).read_text())
    assert summary["lesion_source"] == "manifest" and summary["lesion_mm"] == pytest.approx(truth)
    assert summary["peak_voxel"] == list(peak)
    # peak_mm is the peak voxel through the grid geometry (LPS, axis-aligned), in the native space too
    assert summary["peak_mm"] == pytest.approx(origin + np.array(peak) * spacing)
    assert pre.grid.TransformIndexToPhysicalPoint(peak) == pytest.approx(summary["peak_mm"])
    native = load_pet(scan).image
    assert summary["peak_voxel_native"] == list(native.TransformPhysicalPointToIndex(summary["peak_mm"]))
    distance = float(np.linalg.norm(np.array(summary["peak_mm"]) - truth))
    assert summary["peak_to_lesion_mm"] == pytest.approx(distance)
    assert summary["localised"] is (distance <= 20.0)
    assert summary["localised"] is (offset == (0, 0, 0))  # 8 mm voxels: 0 -> < 7 mm, 5 -> >= 36 mm
    # the inside fraction is the map's share inside the preprocessing brain mask, not a masked map
    cam = sitk.GetArrayFromImage(sitk.ReadImage(summary["files"]["grid_heatmap"])).transpose(2, 1, 0)
    expected = cam[pre.mask > 0].sum() / cam.sum()
    assert 0.0 <= summary["attention_inside_brain"] <= 1.0
    assert summary["attention_inside_brain"] == pytest.approx(expected, rel=1e-5)
    assert summary["layer"] == "backbone.fake" and summary["layer_feature_shape"] == [16, 16, 10]
    assert summary["layer_mm_per_voxel"] == pytest.approx([16.0, 16.0, 16.8])
    assert summary["layer_warning"] is None
    # three PNGs that decode, each cut through the peak
    from PIL import Image

    for axis, view in enumerate(("sagittal", "coronal", "axial")):
        png = Path(summary["files"][f"png_{view}"]).read_bytes()
        with Image.open(Path(summary["files"][f"png_{view}"])) as im:
            im.load()
            assert im.size[0] > 200 and im.size[1] > 200
        cut = read_cut(png)
        assert cut["view"] == view and cut["axis"] == "xyz"[axis] and cut["index"] == peak[axis]
        assert cut["centre"] == list(peak)


def test_explain_cli_lesion_option_and_layer(cohort_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """Real Grad-CAM: --lesion-mm gives the distance; the default (coarse) layer warns in one line,
    an earlier layer (--layer) does not."""
    run, manifest = cohort_run
    row = next(r for r in _rows(manifest) if r["split"] == "test" and r["true_label"] == "1")
    scan = str(manifest.parent / row["image"])
    point = row["lesion_center_mm"].replace(";", ",")
    assert (
        _cli(["explain", str(run), scan, "--fold", "0", "--lesion-mm", point, "-o", str(tmp_path / "a")]) == 0
    )
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "too coarse" in line]
    assert len(warnings) == 1 and "backbone.features.3" in warnings[0]
    summary = json.loads(next((tmp_path / "a").glob("*_explanation.json")).read_text())
    assert summary["lesion_source"] == "option"
    assert summary["peak_to_lesion_mm"] == pytest.approx(
        np.linalg.norm(np.array(summary["peak_mm"]) - _point(row["lesion_center_mm"]))
    )
    assert "peak to true lesion centre" in captured.out

    args = [
        "explain",
        str(run),
        scan,
        "--fold",
        "0",
        "--layer",
        "backbone.features.0",
        "-o",
        str(tmp_path / "b"),
    ]
    assert _cli(args) == 0
    assert "too coarse" not in capsys.readouterr().err
    summary = json.loads(next((tmp_path / "b").glob("*_explanation.json")).read_text())
    assert summary["layer"] == "backbone.features.0" and summary["layer_feature_shape"] == [16, 16, 10]
    assert summary["lesion_mm"] is None and summary["localised"] is None

    assert _cli(["explain", str(run), "--list-layers"]) == 0
    listing = capsys.readouterr().out
    assert "backbone.features.0" in listing and "(default)" in listing
    assert _cli(["explain", str(run), scan, "--layer", "nope", "-o", str(tmp_path / "c")]) != 0
    assert "not a module" in capsys.readouterr().err
    assert _cli(["explain", str(run), scan, "--lesion-mm", "1,2", "-o", str(tmp_path / "c")]) == 2
    assert "x,y,z" in capsys.readouterr().err


@dataclass(frozen=True)
class _Row:
    subject: str
    label: int
    truth_lesion_mm: tuple[float, float, float] | None


def test_cohort_summary_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """True recurrences only (true_label wins over a flipped label), rate over known centres."""
    shape, spacing = (10, 10, 10), (4.0, 4.0, 4.0)
    origin = (-20.0, -20.0, -20.0)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:8, 2:8, 2:8] = 1
    # subject -> where its map peaks (voxel); the lesion centre sits at voxel (4, 4, 4) = (-4, -4, -4) mm
    peaks = {"a": (4, 4, 4), "b": (5, 4, 4), "c": (9, 9, 9), "d": (4, 4, 4), "e": (4, 4, 4), "g": (0, 0, 0)}
    peaks["h"] = None  # an all-zero map
    lesion = (-4.0, -4.0, -4.0)
    rows = [
        _Row("a", 1, lesion),  # localised (0 mm)
        _Row("b", 1, lesion),  # localised (4 mm)
        _Row("c", 1, lesion),  # not localised (~35 mm), peak outside the brain
        _Row("d", 1, None),  # no truth: inside fraction only
        _Row("e", 0, lesion),  # recorded TRC, true recurrence (flipped label): included
        _Row("f", 0, lesion),  # TRC: left out
        _Row("g", 1, lesion),  # recorded recurrence, true TRC: left out
        _Row("h", 1, lesion),  # empty map: no peak, counted as not localised
    ]
    true_labels = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 0, "g": 0, "h": 1}
    volumes = {r.subject: (np.full(shape, r.subject, dtype=object), mask, origin) for r in rows}

    class FakeCam:
        def __init__(self, model, *, layer=None, method="gcam"):
            self.layer, self.method, self.feature_shape = "backbone.fake", method, (5, 5, 5)

    def fake_explain(cams, volume):
        cam = np.zeros(shape, dtype=np.float32)
        if peaks[volume.flat[0]] is not None:
            cam[peaks[volume.flat[0]]] = 1.0
        return GradCam(
            np.stack([cam] * len(cams)), np.full(len(cams), 0.6), "backbone.fake", "gcam", (5, 5, 5)
        )

    monkeypatch.setattr(cohort_mod, "CamModel", FakeCam)
    monkeypatch.setattr(cohort_mod, "explain_with", fake_explain)
    loc = cohort_mod.explain_cohort([object(), object()], rows, volumes, spacing, true_labels=true_labels)
    assert [s["subject"] for s in loc["subjects"]] == ["a", "b", "c", "d", "e", "h"]
    assert loc["label_source"] == "true_label" and loc["n_models"] == 2
    assert (loc["n_explained"], loc["n_with_truth"], loc["n_localised"]) == (6, 5, 3)
    assert loc["n_empty_maps"] == 1
    rate = loc["localisation_rate"]
    assert rate["value"] == pytest.approx(0.6)
    assert (rate["low"], rate["high"]) == pytest.approx(wilson_interval(3, 5))
    by = {s["subject"]: s for s in loc["subjects"]}
    assert by["b"]["peak_to_lesion_mm"] == pytest.approx(4.0) and by["b"]["localised"] is True
    assert by["c"]["localised"] is False and by["c"]["peak_inside_brain"] is False
    assert by["c"]["attention_inside_brain"] == 0.0 and by["a"]["attention_inside_brain"] == 1.0
    assert by["d"]["peak_to_lesion_mm"] is None and by["d"]["peak_mm"] == [-4.0, -4.0, -4.0]
    assert by["d"]["localised"] is None
    assert by["h"]["map_empty"] and by["h"]["peak_voxel"] is None and by["h"]["localised"] is False
    assert loc["median_attention_inside_brain"] == 1.0
    assert loc["layer_mm_per_voxel"] == [8.0, 8.0, 8.0] and loc["layer_warning"] is None
    # without true labels: the recorded label decides
    loc = cohort_mod.explain_cohort([object()], rows, volumes, spacing)
    assert loc["label_source"] == "label" and [s["subject"] for s in loc["subjects"]] == [
        "a",
        "b",
        "c",
        "d",
        "g",
        "h",
    ]


def test_localisation_words_and_helpers() -> None:
    assert all(np.isnan(wilson_interval(0, 0)))
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-3) and high == pytest.approx(0.8922, abs=1e-3)
    assert parse_lesion_mm("1, -2.5;3") == (1.0, -2.5, 3.0)
    with pytest.raises(InputError, match="x,y,z"):
        parse_lesion_mm("1,2,nan")
    # a plateau (a coarse map upsampled with clamped borders): its middle, not its first voxel
    cam = np.zeros((5, 5, 9))
    cam[:, :, :4] = 1.0
    assert find_peak(cam) == (2, 2, 1)  # ties (2, 2, 2): the first closest to the centroid
    assert find_peak(cam, (4.0, 4.0, 4.0), smooth_mm=4.0)[2] < 4
    bad = summarise(
        [{"attention_inside_brain": 0.21, "peak_to_lesion_mm": 60.0, "localised": False}] * 6
        + [{"attention_inside_brain": 0.3, "peak_to_lesion_mm": None, "localised": None}]
    )
    bad.update(layer="backbone.features.27", layer_feature_shape=[4, 4, 2], layer_mm_per_voxel=[64, 64, 82])
    bad["layer_warning"] = resolution_warning("backbone.features.27", (4, 4, 2), (64, 64, 82))
    notes = localisation_diagnosis(bad)
    assert any("mostly outside the brain (median 21 % inside" in n for n in notes)
    assert any("does not point at the lesion" in n and "0 of 6" in n for n in notes)
    assert any("too coarse" in n for n in notes)
    assert "0 of 6" in localisation_sentence(bad)
    good = summarise([{"attention_inside_brain": 0.95, "peak_to_lesion_mm": 8.0, "localised": True}] * 10)
    assert localisation_diagnosis(good) == [] and good["localisation_rate"]["value"] == 1.0
    assert layer_resolution((4, 4, 2), (64, 64, 41), (4.0, 4.0, 4.0)) == (64.0, 64.0, 82.0)


def test_evaluate_writes_the_localisation_block(cohort_run: tuple[Path, Path], capsys) -> None:
    run, manifest = cohort_run
    out = run / "eval"
    args = ["evaluate", str(run), "--bootstrap", "100", "--no-baseline", "--out", str(out)]
    assert _cli(args) == 0  # on by default: the manifest has lesion_center_mm
    assert "Grad-CAM localisation" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    loc = metrics["runs"][0]["localisation"]
    test_recurrences = [
        r["subject"] for r in _rows(manifest) if r["split"] == "test" and r["true_label"] == "1"
    ]
    assert [s["subject"] for s in loc["subjects"]] == test_recurrences
    assert loc["n_explained"] == loc["n_with_truth"] == len(test_recurrences)
    assert loc["n_localised"] == sum(s["localised"] for s in loc["subjects"])
    assert 0 <= loc["localisation_rate"]["low"] <= loc["localisation_rate"]["high"] <= 1
    assert loc["median_attention_inside_brain"] == pytest.approx(
        np.median([s["attention_inside_brain"] for s in loc["subjects"]])
    )
    assert loc["seconds"] < 60
    diagnosis = metrics["runs"][0]["diagnosis"]
    if loc["median_attention_inside_brain"] < 0.8:  # untrained tiny models look everywhere
        assert any("outside the brain" in n for n in diagnosis)
    assert any("too coarse" in n for n in diagnosis)  # cnn3d's last block is 2x2x1 on the tiny grid
    html = (out / "report.html").read_text()
    assert "data-localisation=" in html and "Grad-CAM" in (out / "report.md").read_text()

    assert _cli([*args, "--no-localisation"]) == 0
    assert "localisation" not in json.loads((out / "metrics.json").read_text())["runs"][0]
