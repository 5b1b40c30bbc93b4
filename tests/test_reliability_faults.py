"""Reliability under real faults: SIGKILL of `gliodeploy train` and `gliodeploy export`, hostile checkpoints.

Every interruption here is a real ``SIGKILL`` of the console entry running in a subprocess (no Python
cleanup, no ``finally``), the way an out-of-memory killer or a cluster pre-emption ends a job.
"""

from __future__ import annotations

import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_experiment import write_tiny_experiment

CLI = [sys.executable, "-m", "gliodeploy.cli"]
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),  # the hostile file
]


def _popen(argv: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed by the child's exit; the test reads it afterwards
    return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float, log: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"finished before it could be killed:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"not reached in {timeout} s:\n{log.read_text()[-2000:]}"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from gliodeploy.synth import generate_cohort

    manifest = Path(
        generate_cohort(tmp_path_factory.mktemp("cohort"), n=16, seed=1, size="tiny", progress=False)
    )
    # 3 epochs: long enough to be killed inside fold 1, short enough for CI.
    config = write_tiny_experiment(
        manifest.parent / "sigkill.toml", "sigkill", training={"epochs": 3, "seed": 5}
    )
    return config, manifest


def test_sigkill_during_fold_1_then_resume_equals_uninterrupted(
    experiment: tuple[Path, Path], tmp_path: Path
) -> None:
    config, manifest = experiment
    train = [*CLI, "train", str(config), "--manifest", str(manifest), "--quiet", "--device", "cpu"]
    reference = tmp_path / "reference"
    proc = subprocess.run([*train, "--out", str(reference)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "killed"
    log = tmp_path / "train.log"
    job = _popen([*train, "--out", str(out)], log)
    fold1_log = out / "fold_1" / "log.jsonl"
    # Killed after fold 0 finished and fold 1 logged its first epoch: inside fold 1, mid-training.
    _wait_for(lambda: fold1_log.is_file() and fold1_log.read_text().count("\n") >= 1, job, 240, log)
    _kill(job)
    assert (out / "fold_0" / "done.json").is_file() and not (out / "fold_1" / "done.json").exists()
    assert not (out / "oof_predictions.csv").exists()
    fold0 = (out / "fold_0" / "model.safetensors").read_bytes()
    # No torn file is visible. SIGKILL gives atomic_path no chance to clean up, so a hidden temporary
    # may stay beside the file being written at that instant; the resume must remove it.
    assert all(p.name.startswith(".") for p in out.rglob("*") if ".tmp-" in p.name)
    # Make that case deterministic: the kill may or may not have landed inside a write.
    (out / "fold_1" / ".val_loss_per_patient.csv.tmp-killed.csv").write_text("torn")

    proc = subprocess.run(
        [*train, "--out", str(out), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "fold_0" / "model.safetensors").read_bytes() == fold0  # finished fold untouched
    assert not [p for p in (out / "fold_1").iterdir() if ".tmp-" in p.name]  # stale temporaries gone
    assert (out / "oof_predictions.csv").read_text() == (reference / "oof_predictions.csv").read_text()
    with open(out / "oof_predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) > 0


def _versions(repo: Path) -> dict[str, list[str]]:
    """Published versions per model (hidden folders are not models: Triton and verify skip them)."""
    models = [m for m in repo.iterdir() if m.is_dir() and not m.name.startswith(".")]
    return {m.name: sorted(p.name for p in m.iterdir() if p.name.isdigit()) for m in models}


def test_sigkill_during_export_leaves_no_version(
    tiny_run: Path, tiny_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    before = _versions(repo)
    snapshot = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    log = tmp_path / "export.log"
    job = _popen([*CLI, "export", str(tiny_run), "--out", str(repo), "--threshold", "0.5"], log)
    # Kill once the export has started building the next repository state (its staging folder, beside
    # the repository, holds the new version's folders).
    _wait_for(lambda: _staged(repo), job, 120, log)
    _kill(job)
    assert _versions(repo) == before  # no half-written version 2
    # The repository is exactly as it was; at worst the staging folder stays beside it (SIGKILL).
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot
    verify = [*CLI, "verify", str(repo)]
    proc = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*CLI, "export", str(tiny_run), "--out", str(repo), "--threshold", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "exported version 2" in proc.stdout, proc.stderr
    assert all(v == ["1", "2"] for v in _versions(repo).values()), _versions(repo)
    # The killed export's staging folder is gone: a model server only ever sees finished models.
    assert not list(repo.parent.glob(f".{repo.name}.staging-*"))
    assert subprocess.run(verify, capture_output=True, text=True, timeout=120).returncode == 0


def _staged(repo: Path) -> bool:
    """True once an export's staging folder beside ``repo`` holds a new version folder."""
    return any(p.is_dir() for p in repo.parent.glob(f".{repo.name}.staging-*/*/2"))


class _WriteMarker:
    """Unpickling this runs ``Path(marker).write_text(...)``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pwned"))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model": _WriteMarker(marker), "epoch": 0}))
    assert not marker.exists()


def test_resume_refuses_a_malicious_pickle_checkpoint(experiment: tuple[Path, Path], tmp_path: Path) -> None:
    """checkpoint_last.pt is read with weights_only=True: the payload never runs, the error names the file."""
    config, manifest = experiment
    out = tmp_path / "run"
    train = [*CLI, "train", str(config), "--manifest", str(manifest), "--quiet", "--out", str(out)]
    marker = tmp_path / "marker.txt"
    (out / "fold_0").mkdir(parents=True)
    _malicious_checkpoint(out / "fold_0" / "checkpoint_last.pt", marker)
    proc = subprocess.run(
        [*train, "--fold", "0", "--resume", "--epochs", "1"], capture_output=True, text=True, timeout=300
    )
    assert not marker.exists(), "the checkpoint's pickle payload was executed"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "checkpoint_last.pt" in proc.stderr


def test_pretrained_weights_refuse_a_malicious_pickle(tmp_path: Path) -> None:
    from gliodeploy.errors import ModelError
    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig

    marker = tmp_path / "marker.txt"
    weights = tmp_path / "resnet18.pth"
    _malicious_checkpoint(weights, marker)
    with pytest.raises(ModelError, match="resnet18.pth"):
        build_model("acs_resnet18", preprocessing=PreprocessConfig.tiny(), pretrained_path=str(weights))
    assert not marker.exists()
