"""Reliability: every command, run through its REAL console entry, refuses each bad input cleanly.

"Cleanly" = a non-zero exit code, an ``error:`` line that names the file (or folder) and the problem,
and no Python traceback. The corpus (tests/badinputs.py) is written into a temporary folder: truncated
.nii.gz and .nii, a text file named .nii.gz, 2D, NaN, all-zero and 4D volumes, NIfTI without sidecar,
500 mm voxels, MR NIfTI, DICOM without PatientWeight, CT and MR DICOM series, an empty folder, a missing
path. After the client has sent them to the real Triton server, the server must still be live and
still give the same probability for a good scan.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from badinputs import BadInput, good_dicom, write_corpus
from tiny_experiment import write_tiny_experiment

from gliodeploy import contract

CLI = [sys.executable, "-m", "gliodeploy.cli"]
CLIENT = [sys.executable, "-m", "gliodeploy.client.cli"]
NAMES = [
    "truncated_gz",
    "truncated_nii",
    "not_nifti",
    "flat_2d",
    "nan",
    "zeros",
    "dynamic_4d",
    "no_sidecar",
    "huge_spacing",
    "mr_nifti",
    "dicom_no_weight",
    "dicom_ct",
    "dicom_mr",
    "empty_folder",
    "missing",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadInput]:
    cases = write_corpus(tmp_path_factory.mktemp("bad"))
    assert sorted(cases) == sorted(NAMES)
    return cases


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_dicom(tmp_path_factory.mktemp("good") / "good_series")


def run(argv: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, *expected: str | BadInput) -> str:
    """Non-zero exit, ``error:`` lines holding each expected text (or naming the bad input), no traceback."""
    err = proc.stderr
    assert proc.returncode != 0, f"exit 0 for a bad input:\n{proc.stdout}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors, f"no 'error:' line in stderr:\n{err}"
    text = "\n".join(errors)
    for item in expected:
        ok = item.matches(text) if isinstance(item, BadInput) else item in text
        assert ok, f"{item} not named in:\n{text}"
    return text


# -- gliodeploy preprocess -----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_preprocess_refuses(name: str, corpus: dict[str, BadInput], tmp_path: Path) -> None:
    out = tmp_path / "grid.nii.gz"
    proc = run([*CLI, "preprocess", str(corpus[name].path), "-o", str(out), "--preset", "tiny"])
    assert_clean_failure(proc, corpus[name])
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_preprocess_accepts_the_good_series(good: Path, tmp_path: Path) -> None:
    """The corpus is bad because of its faults, not because the phantom itself is unusable."""
    proc = run([*CLI, "preprocess", str(good), "-o", str(tmp_path / "g.nii.gz"), "--preset", "tiny"])
    assert proc.returncode == 0, proc.stderr


# -- gliodeploy explain (tiny_run) ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["truncated_gz", "no_sidecar", "dicom_ct"])  # ~9 s each: torch
def test_explain_refuses(name: str, corpus: dict[str, BadInput], tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "explain"
    proc = run([*CLI, "explain", str(tiny_run), str(corpus[name].path), "--out", str(out)])
    assert_clean_failure(proc, corpus[name])
    assert not out.exists() or not any(out.iterdir())


# -- gliodeploy-client predict against the real server ------------------------------------------
@pytest.mark.server
def test_client_reports_each_bad_scan_and_server_survives(
    corpus: dict[str, BadInput], good: Path, triton_server, tmp_path: Path
) -> None:
    from gliodeploy.client.api import GliodeployClient

    with GliodeployClient(triton_server.http_url, timeout=60) as client:
        before = client.predict_file(good).probability

    per_scan = [n for n in NAMES if n not in ("empty_folder", "missing")]  # these stop discovery
    out = tmp_path / "res.json"
    argv = [*CLIENT, "predict", *(str(corpus[n].path) for n in per_scan), str(good)]
    proc = run([*argv, "--url", triton_server.http_url, "--json", "-o", str(out), "-j", "4"])
    assert proc.returncode == 1, proc.stderr  # some failed, the good one did not
    assert "Traceback" not in proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["n_ok"], doc["n_failed"]) == (1, len(per_scan))
    for name, result in zip(per_scan, doc["results"], strict=False):
        assert not result["ok"] and corpus[name].matches(result["error"]), (name, result["error"])
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert any(corpus[name].matches(line) for line in lines)  # visible to the operator too
    assert doc["results"][-1]["ok"] and doc["results"][-1]["probability"] == pytest.approx(before, abs=1e-6)

    for name in ("empty_folder", "missing"):  # the whole call fails before any request
        proc = run([*CLIENT, "predict", str(corpus[name].path), "--url", triton_server.http_url])
        assert_clean_failure(proc, corpus[name])

    # Still live, ready and still right.
    with GliodeployClient(triton_server.http_url, timeout=60) as client:
        health = client.health()
        assert health["live"] and health["ready"] and health["model_ready"]
        assert client.predict_file(good).probability == pytest.approx(before, abs=1e-6)


# -- gliodeploy train with a manifest pointing at a bad file ------------------------------------


@pytest.mark.parametrize("name", ["truncated_gz"])
def test_train_names_the_bad_manifest_row(
    name: str, corpus: dict[str, BadInput], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path / "cohort"
    root.mkdir()
    rows = []
    for i in range(4):
        good_dicom(root / f"s{i}", seed=i)
        rows.append({"subject": f"s{i}", "image": f"s{i}", "label": i % 2, "scanner": "A", "site": "X"})
    rows.append({"subject": "bad", "image": str(corpus[name].path), "label": 1, "scanner": "A", "site": "X"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, [*rows[0], "split"])
        writer.writeheader()
        writer.writerows({**r, "split": "train"} for r in rows)
    config = write_tiny_experiment(
        tmp_path / "exp.toml",
        "bad-manifest",
        training={"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1},
    )
    run_dir = tmp_path / "run"
    proc = run([*CLI, "train", str(config), "--manifest", str(manifest), "--out", str(run_dir), "--quiet"])
    assert_clean_failure(proc, corpus[name])
    assert not list(run_dir.glob("fold_*/model.safetensors"))


# -- export / verify / serve with a bad run directory or repository -----------------------------
def test_export_refuses_broken_run_dirs(tiny_run: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "fold_1")  # a fold never finished
    assert_clean_failure(run([*CLI, "export", str(run_dir), "--out", str(repo)]), "fold(s) [1] not finished")
    (run_dir / "plans.json").write_text("{not json")
    assert_clean_failure(run([*CLI, "export", str(run_dir), "--out", str(repo)]), "plans.json")
    assert not repo.exists() or not any(repo.rglob("model.onnx"))


def test_export_refuses_a_truncated_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    weights = run_dir / "fold_1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    proc = run([*CLI, "export", str(run_dir), "--out", str(tmp_path / "repo")])
    assert_clean_failure(proc, "model.safetensors")


def test_verify_and_serve_refuse_broken_repositories(tiny_repository: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_clean_failure(run([*CLI, "verify", str(missing)]), "nowhere")
    assert_clean_failure(run([*CLI, "serve", str(missing)]), "nowhere")
    empty = tmp_path / "empty_repo"
    empty.mkdir()
    assert_clean_failure(run([*CLI, "verify", str(empty)]), "empty_repo")
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    (repo / contract.ENSEMBLE_MODEL / "1" / "metadata.json").write_text("{}")
    assert_clean_failure(run([*CLI, "verify", str(repo)]), "metadata.json")
