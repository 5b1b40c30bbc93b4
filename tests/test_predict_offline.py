"""``gliodeploy predict``: offline inference on an exported repository, against the REAL served model.

Reference = ``gliodeploy-client`` through the bundled Triton server (tests/conftest.py fixtures) on the
same repository and scans: probabilities within 1e-5, same decisions and failures. The CLI runs in a
subprocess where ``import torch`` fails, so any torch import on the offline path would show.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gliodeploy.client import errors as cerr
from gliodeploy.client.api import GliodeployClient, Prediction, ScanFailure
from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.predict.offline import OfflinePredictor, select_providers

# `import torch` raises in the child: the offline path must never need it.
_NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.argv = ['gliodeploy', *sys.argv[1:]]; "
    "from gliodeploy.cli import main; main()"
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four tiny synthetic scans: NIfTI files and DICOM series."""
    from gliodeploy.synth import generate_cohort

    manifest = Path(
        generate_cohort(
            tmp_path_factory.mktemp("cohort"),
            n=4,
            seed=5,
            size="tiny",
            dicom_fraction=0.5,
            test_fraction=0.0,
            progress=False,
        )
    )
    with open(manifest, newline="") as fh:
        return [(manifest.parent / r["image"]).resolve() for r in csv.DictReader(fh)]


@pytest.fixture()
def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"not a nifti file")
    return path


@pytest.mark.server
def test_offline_equals_served_model(
    request: pytest.FixtureRequest, repo: Path, scans: list[Path], corrupt: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    batch = [*scans, corrupt]
    with GliodeployClient(server.http_url, timeout=60) as client:
        served = client.predict_many(batch, concurrency=2)
        served_info = client.info()
    predictor = OfflinePredictor(repo, device="cpu")
    offline = predictor.predict_many(batch, workers=2)
    assert predictor.info.threshold == served_info.threshold
    assert predictor.info.operating_point == served_info.operating_point
    assert predictor.info.preprocessing == served_info.preprocessing
    assert (predictor.info.version, predictor.info.folds) == (served_info.version, served_info.folds)
    assert (
        [type(r) for r in offline] == [type(r) for r in served] == [Prediction] * len(scans) + [ScanFailure]
    )
    for got, want in zip(offline[:-1], served[:-1], strict=True):
        assert got.source == want.source
        assert got.probability == pytest.approx(want.probability, abs=1e-5)
        np.testing.assert_allclose(got.fold_probs, want.fold_probs, atol=1e-5)
        assert (got.label, got.threshold, got.model_version) == (
            want.label,
            want.threshold,
            want.model_version,
        )
        assert set(got.timings) == set(want.timings)
    bad_off, bad_srv = offline[-1], served[-1]
    assert (bad_off.error_type, bad_off.exit_code, bad_off.error) == (
        bad_srv.error_type,
        bad_srv.exit_code,
        bad_srv.error,
    )


def test_cli_json_csv_text_without_torch(
    repo: Path, scans: list[Path], corrupt: Path, tmp_path: Path
) -> None:
    predictor = OfflinePredictor(repo, device="cpu")
    expected = predictor.predict_file(scans[0])

    proc = _cli("predict", str(repo), str(scans[0]), str(scans[1]), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    threshold = doc["model"]["threshold"]
    assert threshold == predictor.info.threshold and doc["model"]["operating_point"]["method"] == "fixed"
    assert doc["runtime"]["providers"][0] == "CPUExecutionProvider" and doc["n_ok"] == 2
    for r in doc["results"]:
        assert r["threshold"] == threshold and r["label"] == int(r["probability"] >= threshold)
        assert r["label_name"] in ("recurrence", "treatment-related change")
    assert doc["results"][0]["probability"] == pytest.approx(expected.probability, abs=1e-6)

    out = tmp_path / "res.csv"
    proc = _cli("predict", str(repo), str(scans[0]), str(corrupt), "--csv", "-o", str(out))
    assert proc.returncode == cerr.EXIT_SOME_FAILED, proc.stderr
    assert f"error: {corrupt}:" in proc.stderr and "Traceback" not in proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["ok"] for r in rows] == ["1", "0"]
    assert float(rows[0]["threshold"]) == threshold and rows[0]["threshold_method"] == "fixed"
    assert rows[0]["label"] == str(expected.label) and rows[0]["label_name"] == expected.label_name
    assert rows[1]["error_type"] == "InputError" and "corrupt.nii.gz" in rows[1]["error"]

    proc = _cli("predict", str(repo), str(scans[0]), "--model-version", "1")
    head, line = proc.stdout.splitlines()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert (
        head.startswith("gliodeploy_ensemble v1: operating point threshold 0.5") and "P(recurrence)=" in line
    )
    assert "in-process with onnxruntime" in proc.stderr and "fp32 (CPUExecutionProvider)" in proc.stderr


def test_single_bad_scan_exits_with_its_own_code(repo: Path, corrupt: Path) -> None:
    proc = _cli("predict", str(repo), str(corrupt), "-q")
    assert proc.returncode == 2 and "FAILED (InputError)" in proc.stdout and "Traceback" not in proc.stderr
    proc = _cli("predict", str(repo), str(corrupt.parent / "missing.nii.gz"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "no such file" in proc.stderr


def test_series_uid_reaches_the_dicom_reader(repo: Path, scans: list[Path]) -> None:
    dicom = next(s for s in scans if s.is_dir())
    proc = _cli("predict", str(repo), str(dicom), "--series-uid", "1.2.3.4", "-q")
    assert proc.returncode == 2 and "no series 1.2.3.4" in proc.stdout and "Traceback" not in proc.stderr


def test_unverifiable_repository_and_wrong_version_refused(repo: Path, corrupt: Path, tmp_path: Path) -> None:
    edited = tmp_path / "repo"
    shutil.copytree(repo, edited)
    meta = edited / "gliodeploy_ensemble" / "1" / "metadata.json"
    meta.write_text(meta.read_text().replace('"threshold": 0.5', '"threshold": 0.1', 1))
    proc = _cli("predict", str(edited), str(corrupt))
    assert proc.returncode == ModelError.exit_code, proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr and proc.stdout == ""
    proc = _cli("predict", str(repo), str(corrupt), "--model-version", "7")
    assert proc.returncode == cerr.ModelVersionError.exit_code
    assert "error:" in proc.stderr and "no version '7'" in proc.stderr
    proc = _cli("predict", str(tmp_path / "nowhere"), str(corrupt))
    assert proc.returncode == ModelError.exit_code and proc.stderr.startswith("error:")


def test_reading_overlaps_inference(repo: Path, scans: list[Path]) -> None:
    """The next scan is read while the model runs (no wall-clock assertion: an event, a timeout)."""
    started: list[str] = []
    second_started = threading.Event()

    class Probe(OfflinePredictor):
        def prepare(self, path, **kw):  # noqa: ANN001, ANN202
            started.append(str(path))
            if str(path) == str(scans[1]):
                second_started.set()
            return super().prepare(path, **kw)

        def _predict_prepared(self, item):  # noqa: ANN001, ANN202
            if item.source == str(scans[0]):
                assert second_started.wait(30), "scan 2 was not read while scan 1 was in the model"
            return super()._predict_prepared(item)

    predictor = Probe(repo, device="cpu")
    results = predictor.predict_many(scans, workers=1, prefetch=2)
    assert [r.source for r in results] == [str(s) for s in scans] and all(r.ok for r in results)
    assert sorted(started) == sorted(str(s) for s in scans)
    # same answer one by one
    assert results[2].probability == pytest.approx(predictor.predict_file(scans[2]).probability, abs=1e-7)


def test_provider_selection() -> None:
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("auto", cuda) == cuda
    assert select_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("cpu", cuda) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="--device"):
        select_providers("tpu", cuda)
