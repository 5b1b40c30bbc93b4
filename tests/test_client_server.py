"""The client against the REAL bundled Triton server (serving fixtures of tests/conftest.py).

Reference = the PyTorch fold models of the same run, fed the same preprocessed volume: the client's
probability must match to 1e-5 over HTTP and gRPC, for NIfTI and DICOM inputs.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gliodeploy.client import errors as cerr
from gliodeploy.client.api import GliodeployClient, Prediction, ScanFailure

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic cohort with NIfTI scans and DICOM series (half of the subjects)."""
    from gliodeploy.synth import generate_cohort

    manifest = Path(
        generate_cohort(
            tmp_path_factory.mktemp("cohort"), n=8, seed=3, size="tiny", dicom_fraction=0.5, progress=False
        )
    )
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = [(manifest.parent / r["image"]).resolve() for r in rows]
    return {"nifti": next(p for p in images if p.is_file()), "dicom": next(p for p in images if p.is_dir())}


def _reference(run_dir: Path, scan: Path) -> float:
    """P(recurrence) from the PyTorch fold models (mean of sigmoids), same preprocessing as the client."""
    import torch

    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import PreprocessConfig, preprocess
    from gliodeploy.training.rundir import RunDir

    plans = json.loads((run_dir / "plans.json").read_text())
    cfg = PreprocessConfig.from_dict(plans["preprocessing"])
    x = preprocess(load_pet(scan).image, cfg).array
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
        probs = [torch.sigmoid(m(t)).item() for m in RunDir(run_dir).load_fold_models()]
    return float(np.mean(probs))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_predict_matches_pytorch_ensemble(
    request: pytest.FixtureRequest, cohort: dict[str, Path], protocol: str, kind: str
) -> None:
    server = request.getfixturevalue("triton_server")
    run_dir = Path(request.getfixturevalue("tiny_run"))
    url = server.http_url if protocol == "http" else server.grpc_url
    with GliodeployClient(url, protocol=protocol, timeout=60) as client:
        pred = client.predict_file(cohort[kind])
        info = client.info()
    assert pred.probability == pytest.approx(_reference(run_dir, cohort[kind]), abs=1e-5)
    assert len(pred.fold_probs) == info.folds and pred.label == int(pred.probability >= info.threshold)
    assert set(pred.timings) == {"read", "suv", "preprocess", "request", "total"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gliodeploy.client.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_json_csv_and_corrupt_file_in_batch(
    request: pytest.FixtureRequest, cohort: dict[str, Path], tmp_path: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file")
    scans = [str(cohort["nifti"]), str(corrupt)]
    proc = _cli("predict", *scans, "--url", server.http_url, "--json")
    assert proc.returncode == cerr.EXIT_SOME_FAILED, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["n_ok"], doc["n_failed"]) == (1, 1)
    assert doc["results"][0]["ok"] and 0 <= doc["results"][0]["probability"] <= 1
    assert not doc["results"][1]["ok"] and "corrupt.nii.gz" in doc["results"][1]["error"]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "res.csv"
    proc = _cli(
        "predict",
        str(cohort["nifti"]),
        "--url",
        server.grpc_url,
        "--protocol",
        "grpc",
        "--csv",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1 and float(rows[0]["probability"]) == pytest.approx(
        doc["results"][0]["probability"], abs=1e-6
    )
    assert rows[0]["threshold_method"] == doc["model"]["operating_point"]["method"] == "fixed"
    proc = _cli("predict", str(cohort["nifti"]), "--url", server.http_url)
    head, line = proc.stdout.splitlines()
    assert "operating point threshold 0.5" in head and "P(recurrence)=" in line


def test_health_info_and_wrong_version(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("triton_server")
    assert _cli("health", "--url", server.http_url).returncode == 0
    info = json.loads(_cli("info", "--url", server.http_url, "--json").stdout)
    assert 0 < info["threshold"] < 1 and info["preprocessing"]["shape"] == info["grid_shape"]
    # the fixture's run was never evaluated: exported with an explicit threshold, and the client says so
    assert info["operating_point"]["threshold"] == info["threshold"]
    assert info["operating_point"]["method"] == "fixed"
    text = _cli("info", "--url", server.http_url).stdout
    assert "operating point: threshold 0.5 (fixed by the user; never measured" in text
    proc = _cli("info", "--url", server.http_url, "--model-version", "999", "--retries", "0")
    assert proc.returncode == cerr.ModelVersionError.exit_code, proc.stderr
    proc = _cli("info", "--url", server.http_url, "--model", "no_such_model", "--retries", "0")
    assert proc.returncode == cerr.ModelNotReadyError.exit_code and "Traceback" not in proc.stderr


def test_stdlib_kserve_example_matches_client(
    request: pytest.FixtureRequest, cohort: dict[str, Path], tmp_path: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import PreprocessConfig, preprocess

    with GliodeployClient(server.http_url) as client:
        cfg = PreprocessConfig.from_dict(client.info().preprocessing)
        volume = preprocess(load_pet(cohort["nifti"]).image, cfg).array.astype(np.float32)
        expected = client.predict_volume(volume)
    np.save(tmp_path / "v.npy", volume)
    for extra in ([], ["--plain-json"]):
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "clients" / "kserve_v2_infer.py"),
                str(tmp_path / "v.npy"),
                "--url",
                f"http://{server.http_url.split('://')[-1]}",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["probability"] == pytest.approx(expected.probability, abs=1e-6)


def test_predict_many_keeps_input_order(request: pytest.FixtureRequest, cohort: dict[str, Path]) -> None:
    server = request.getfixturevalue("triton_server")
    scans = [cohort["nifti"], Path("/nonexistent/scan.nii.gz"), cohort["nifti"]]
    with GliodeployClient(server.http_url) as client:
        res = client.predict_many(scans, concurrency=3)
    assert [type(r) for r in res] == [Prediction, ScanFailure, Prediction]
    assert res[0].probability == pytest.approx(res[2].probability, abs=1e-7)


def test_client_extra_installs_no_torch(tmp_path: Path) -> None:
    """``pip install .[client]`` resolves without torch/scipy/sklearn (dry run, needs a package index)."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[client]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    if proc.returncode != 0:
        pytest.skip(f"no package index reachable for the dry run: {proc.stderr.strip()[-300:]}")
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"tritonclient", "simpleitk", "pydicom", "numpy"} <= names
    assert not names & {"torch", "scipy", "scikit-learn", "nilearn", "monai"}


def _clock(time_zero: str, offset_s: float) -> str:
    h, m, s = (int(v) for v in time_zero.split(":"))
    total = h * 3600 + m * 60 + s + int(offset_s)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def test_nifti_without_sidecar_takes_suv_fields_from_the_command_line(
    triton_server, cohort: dict[str, Path], tmp_path: Path
) -> None:
    """A bare Bq/mL NIfTI + the SUV fields as options gives the same result as with its sidecar."""
    import shutil

    scan = cohort["nifti"]
    sidecar = json.loads(scan.with_name(scan.name.replace(".nii.gz", ".json")).read_text())
    participants = (scan.parents[2] / "participants.tsv").read_text().splitlines()
    header = participants[0].split("\t")
    subject = scan.name.split("_")[0]
    row = dict(zip(header, next(r.split("\t") for r in participants if r.startswith(subject)), strict=True))
    bare = tmp_path / "bare.nii.gz"
    shutil.copy(scan, bare)  # no sidecar, no participants.tsv beside it

    base = [
        "predict",
        "--url",
        triton_server.http_url,
        "--json",
        "--quiet",
    ]
    missing = _cli(*base, str(bare))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr

    explicit = _cli(
        *base,
        str(bare),
        "--weight",
        row["weight"],
        "--dose",
        str(sidecar["InjectedRadioactivity"]),
        "--injection-time",
        _clock(sidecar["TimeZero"], sidecar["InjectionStart"]),
        "--scan-time",
        _clock(sidecar["TimeZero"], sidecar["ImageDecayCorrectionTime"]),
        "--units",
        sidecar["Units"],
        "--radionuclide",
        sidecar["TracerRadionuclide"],
    )
    reference = _cli(*base, str(scan))
    assert explicit.returncode == 0 and reference.returncode == 0, explicit.stderr + reference.stderr
    p_explicit = json.loads(explicit.stdout)["results"][0]["probability"]
    p_reference = json.loads(reference.stdout)["results"][0]["probability"]
    assert p_explicit == pytest.approx(p_reference, abs=1e-6)
