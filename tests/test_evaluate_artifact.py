"""`gliodeploy evaluate RUN --artifact REPO`: the exported graph, run as `gliodeploy predict` runs it, beside
the PyTorch folds on the manifest's test split; with labels (AUC of both) and without (predictions only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from gliodeploy.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning")


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from gliodeploy.cli import app
    from gliodeploy.cli_utils import run_app

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_app(app, argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic cohort whose test split holds 4 scans of both classes."""
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("artifact_cohort")
    return Path(generate_cohort(root, n=8, seed=5, size="tiny", test_fraction=0.5, progress=False))


def test_artifact_equals_the_pytorch_folds(
    tiny_run: Path, repo: Path, cohort: Path, tmp_path, capsys
) -> None:
    import torch

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.training.rundir import RunDir

    out = tmp_path / "out"
    argv = ["evaluate", str(tiny_run), "--artifact", str(repo), "--manifest", str(cohort), "--out", str(out)]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    doc = json.loads((out / "artifact.json").read_text())
    assert doc["n"] == 4 and doc["version"] == 1 and doc["threshold"] == 0.5
    assert doc["max_abs_diff"]["ensemble"] <= 1e-5 and max(doc["max_abs_diff"]["folds"]) <= 1e-5
    assert doc["decisions"]["equal"] == 4 and doc["decisions"]["differ"] == []
    m = doc["metrics"]
    assert m["n_positive"] == 3 and m["onnx"]["roc_auc"] == pytest.approx(m["pytorch"]["roc_auc"])
    # the PyTorch folds by hand, on the training cache
    rows = read_manifest(cohort, require_train=False).test
    run = RunDir(tiny_run)
    entries = build_cache(rows, run.preprocessing(), cohort.parent / "cache", progress=False)
    models = run.load_fold_models()
    with torch.inference_mode():
        folds = np.array(
            [
                [torch.sigmoid(f(torch.from_numpy(load_cached(entries[r.subject]).array)[None, None])).item()]
                for r in rows
                for f in models
            ]
        ).reshape(len(rows), len(models))
    got = np.array([p["fold_probabilities"] for p in doc["predictions"]])
    np.testing.assert_allclose(got, folds, atol=1e-5)
    np.testing.assert_allclose([p["probability"] for p in doc["predictions"]], folds.mean(1), atol=1e-5)
    # the report says it in words, beside the files; the run itself is untouched
    assert "max |dp|: ensemble" in stdout and "4/4 equal" in stdout and "AUC: exported" in stdout
    assert "AUC: exported" in (out / "artifact.md").read_text()
    assert len((out / "artifact_predictions.csv").read_text().splitlines()) == 5
    assert not (tiny_run / "operating_point.json").exists()


def test_prediction_only_without_labels(tiny_run: Path, repo: Path, cohort: Path, tmp_path, capsys) -> None:
    with open(cohort, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["label"] = ""
    unlabelled = cohort.parent / "unlabelled.csv"
    with open(unlabelled, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    argv = ["evaluate", str(tiny_run), "--artifact", str(repo), "-m", str(unlabelled), "-o", str(out)]
    code, stdout, err = _cli(argv, capsys)
    assert code == 0, err
    doc = json.loads((out / "artifact.json").read_text())
    assert doc["metrics"] is None and doc["n"] == 4 and doc["max_abs_diff"]["ensemble"] <= 1e-5
    assert all(p["label"] is None and p["decision"] for p in doc["predictions"])
    assert "predictions only, no AUC" in stdout and "AUC: exported" not in stdout


def test_artifact_errors_are_one_line(tiny_run: Path, repo: Path, cohort: Path, tmp_path, capsys) -> None:
    code, _, err = _cli(["evaluate", str(tiny_run), str(tiny_run), "--artifact", str(repo)], capsys)
    assert code == InputError.exit_code and "one run" in err
    code, _, err = _cli(
        ["evaluate", str(tiny_run), "--artifact", str(repo), "-m", str(cohort), "--model-version", "9"],
        capsys,
    )
    assert code != 0 and err.startswith("error: ") and "no version '9'" in err and "Traceback" not in err
