"""The README's main job, end to end, on a tiny synthetic cohort: `gliodeploy demo`.

Runs the real console entry in a child process: synth -> train -> evaluate -> explain -> export ->
real Triton server -> gliodeploy-client -> server stopped. Tiny grid and a 2-fold, 3-epoch schedule
keep it around two minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_experiment import write_tiny_experiment

pytestmark = pytest.mark.slow


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_demo_runs_the_whole_pipeline_and_stops_the_server(tmp_path: Path) -> None:
    config = write_tiny_experiment(
        tmp_path / "tiny.toml",
        "tiny_demo",
        training={"epochs": 3, "suspect_window": 2},
    )
    out = tmp_path / "demo"
    proc = _demo("--out", str(out), "--n", "40", "--size", "tiny", "--config", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    # Every artefact the summary promises exists.
    manifest = out / "cohort" / "manifest.csv"
    report = out / "run" / "evaluation" / "report.html"
    predictions = json.loads((out / "predictions_external.json").read_text())
    assert manifest.is_file() and report.is_file()
    assert (out / "run" / "oof_predictions.csv").is_file()
    assert list((out / "explain").glob("*_gradcam_native.nii.gz"))
    assert (out / "model_repository" / "gliodeploy_ensemble" / "1" / "model.onnx").is_file()

    # The client predicted every external-site scan, each a probability in [0, 1].
    n_test = sum(1 for line in manifest.read_text().splitlines()[1:] if ",test," in line)
    results = predictions["results"] if isinstance(predictions, dict) else predictions
    assert len(results) == n_test > 0
    assert all(0.0 <= r["probability"] <= 1.0 for r in results)

    # The summary quotes the CNN and the TBR baseline AUCs, and the server was stopped.
    assert "CNN ensemble 'tiny_demo': external test AUC" in proc.stdout
    assert "tbr_max baseline: external test AUC" in proc.stdout
    assert "CNN ensemble 'tiny_demo' - baseline, external test AUC: " in proc.stdout  # paired bootstrap
    assert "Triton server stopped" in proc.stdout
    assert "$ gliodeploy verify " in proc.stdout and "gliodeploy_ensemble: versions 1 OK" in proc.stdout
    # The served decision rule is the OOF-chosen operating point, and the client's decisions are shown.
    op = predictions["model"]["operating_point"]
    assert op["method"] == "youden" and op["validation_mode"] == "final" and op["sensitivity"]
    card = json.loads((out / "model_repository" / "gliodeploy_ensemble" / "1" / "metadata.json").read_text())
    assert card["operating_point"] == op and card["threshold"] == op["threshold"]
    assert all(r["threshold"] == op["threshold"] for r in results)
    assert f"served operating point: threshold {op['threshold']:.4g} (youden" in proc.stdout
    assert f"client decisions on {n_test} external scans:" in proc.stdout
    assert "operating point threshold" in proc.stdout  # the plain client line shows it too
    assert (
        out / ".gliodeploy-demo"
    ).is_file()  # marks the folder as the demo's own (--overwrite may delete it)
    log = (out / "tritonserver.log").read_text()
    assert "Started HTTPService" in log or "HTTP" in log


def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    proc = _demo("--out", str(out))
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Even with --overwrite: the folder holds no demo marker, so it is someone else's data.
    proc = _demo("--out", str(out), "--overwrite")
    assert proc.returncode != 0 and "not written by gliodeploy demo" in proc.stderr
    assert (out / "keep.txt").read_text() == "earlier results"
