"""`gliodeploy evaluate` end to end on a synthetic cohort, and its error messages / exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_experiment import write_tiny_experiment

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app

torch = pytest.importorskip("torch")
N_FOLDS = 2


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run_app(app, args)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic cohort with a test split and a run trained by `gliodeploy train` (2 folds x 2 epochs)."""
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("evaluate")
    # n=18, seed=2: every label x scanner stratum of the training site holds >= 2 subjects (2 folds)
    # and the external test split holds both classes
    manifest = generate_cohort(
        root / "cohort", n=18, seed=2, size="small", test_fraction=0.35, progress=False
    )
    write_tiny_experiment(
        root / "tiny.toml",
        "tiny_cnn",
        training={"max_steps_per_epoch": 1, "suspect_window": 1},
    )
    run = root / "run"
    args = [
        "train",
        str(root / "tiny.toml"),
        "--manifest",
        str(manifest),
        "--out",
        str(run),
        "--device",
        "cpu",
    ]
    assert _cli([*args, "--quiet"]) == 0
    return run, manifest


def test_evaluate_writes_report_with_ensemble_and_baseline(cohort_run: tuple[Path, Path], capsys) -> None:
    from sklearn.metrics import roc_auc_score

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.training.rundir import RunDir

    run, manifest = cohort_run
    out = run / "eval"
    assert _cli(["evaluate", str(run), "--bootstrap", "200", "--out", str(out)]) == 0
    assert "html:" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    assert html.count("<section id=") == 11 and "data:image/png;base64," in html

    # the test AUC is the AUC of the mean fold probability on the cached test volumes
    test_rows = read_manifest(manifest, require_train=False).test
    entries = build_cache(test_rows, RunDir(run).preprocessing(), manifest.parent / "cache", progress=False)
    models = RunDir(run).load_fold_models()
    with torch.inference_mode():
        probs = [
            np.mean(
                [
                    torch.sigmoid(
                        m(torch.from_numpy(load_cached(entries[r.subject]).array)[None, None])
                    ).item()
                    for m in models
                ]
            )
            for r in test_rows
        ]
    labels = [r.label for r in test_rows]
    entry = metrics["runs"][0]
    assert entry["test"]["n"] == len(test_rows)
    assert entry["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(labels, probs)
    )
    assert len(entry["test"]["folds"]["per_fold"]) == N_FOLDS
    assert "built_in_prior" not in entry  # CNN3D starts from random weights: no prior to compare with
    assert entry["localisation"]["n_with_truth"] > 0  # Grad-CAM over the test recurrences, as for any model
    # the baseline was computed on every scan, evaluated on train (Youden) and test
    assert len(metrics["baseline_parameters"]) == len(read_manifest(manifest, require_train=False).rows)
    assert metrics["baseline"]["test"]["n"] == len(test_rows)
    assert {r["model"] for r in metrics["table"]} == {"tiny_cnn", "tbr_max baseline"}
    # validation = the run's own out-of-fold predictions, suspects = the run's suspect list
    with open(run / "oof_predictions.csv", newline="") as fh:
        oof = list(csv.DictReader(fh))
    oof_auc = roc_auc_score([int(r["label"]) for r in oof], [float(r["probability"]) for r in oof])
    assert entry["validation"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"] == pytest.approx(oof_auc)
    with open(run / "suspect_labels.csv", newline="") as fh:
        assert entry["suspect_labels"] == sorted(r["subject"] for r in csv.DictReader(fh))


def test_lesionnet_run_is_compared_with_its_untrained_prior(
    cohort_run: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    """LesionNet scores its asymmetry prior before training: evaluate reports trained vs untrained on
    the same patients, and says in words when training added nothing measurable."""
    from sklearn.metrics import roc_auc_score

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.training.rundir import RunDir

    _, manifest = cohort_run
    config = write_tiny_experiment(
        tmp_path / "lesion.toml",
        "tiny_lesion",
        model={"name": "lesionnet"},
        preprocessing={"normalization": "tbr"},
        training={"max_steps_per_epoch": 1, "epochs": 1},
    )
    run = tmp_path / "run"
    assert _cli(["train", str(config), "--manifest", str(manifest), "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "eval"
    args = [
        "evaluate",
        str(run),
        "--bootstrap",
        "200",
        "--out",
        str(out),
        "--no-baseline",
        "--no-localisation",
    ]
    assert _cli(args) == 0
    printed = capsys.readouterr().out
    entry = json.loads((out / "metrics.json").read_text())["runs"][0]
    prior = entry["built_in_prior"]
    assert "asymmetry prior" in prior["description"]

    # the untrained AUCs are a freshly built model's, on the OOF patients and on the test split
    rows = {r.subject: r for r in read_manifest(manifest, require_train=False).rows}
    with open(run / "oof_predictions.csv", newline="") as fh:
        oof = [rows[r["subject"]] for r in csv.DictReader(fh)]
    test = [r for r in rows.values() if r.split == "test"]
    model = RunDir(run).build_model().eval()
    entries = build_cache(oof + test, RunDir(run).preprocessing(), manifest.parent / "cache", progress=False)
    with torch.inference_mode():

        def untrained(r):
            return model(torch.from_numpy(load_cached(entries[r.subject]).array)[None, None]).item()

        for key, group in (("validation", oof), ("test", test)):
            auc = roc_auc_score([r.label for r in group], [untrained(r) for r in group])
            assert prior[key]["auc_b"] == pytest.approx(auc)
            assert prior[key]["n"] == len(group)
    assert prior["validation"]["auc_a"] == pytest.approx(
        entry["validation"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"]
    )
    # one step of training cannot have added measurable discrimination: said in words, in both places
    assert prior["validation"]["delta"]["low"] <= 0
    assert any("Training added no measurable discrimination" in n for n in entry["diagnosis"])
    assert "warning: Training added no measurable discrimination" in printed
    assert "untrained" in (out / "report.md").read_text()

    # a manifest that lacks one of the run's out-of-fold patients: one clear line, nothing written
    with open(manifest, newline="") as fh:
        kept = [r for r in csv.DictReader(fh) if r["subject"] != oof[0].subject]
    partial = manifest.parent / "without_one_oof_patient.csv"  # images are relative to the manifest
    with open(partial, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    out2 = tmp_path / "eval2"
    args = [
        "evaluate",
        str(run),
        "--manifest",
        str(partial),
        "--out",
        str(out2),
        "--no-baseline",
        "--no-localisation",
    ]
    assert _cli(args) == 2
    err = capsys.readouterr().err
    assert f"(e.g. {oof[0].subject}): evaluate with the manifest the run was trained on" in err
    assert "Traceback" not in err and not (out2 / "metrics.json").exists()


def test_missing_run_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert _cli(["evaluate", str(tmp_path / "no_such_run")]) == 4
    assert "does not exist" in capsys.readouterr().err


def test_manifest_without_test_split_is_a_clear_error(
    cohort_run: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    run, manifest = cohort_run
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    train_only = manifest.parent / "train_only.csv"
    with open(train_only, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert _cli(["evaluate", str(run), "--manifest", str(train_only), "--out", str(tmp_path)]) == 2
    assert "no rows with split == 'test'" in capsys.readouterr().err
