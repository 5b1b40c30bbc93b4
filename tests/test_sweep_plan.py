"""Sweep plan and profile without a scheduler: the example profile, bad input as one-line errors, and
the sbatch scripts the Slurm launcher writes (the real submission is tests/test_slurm_sweep.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny_experiment import write_tiny_experiment

from gliodeploy.cluster.launchers import SlurmLauncher
from gliodeploy.cluster.profile import load_profile
from gliodeploy.cluster.sweep import create_plan
from gliodeploy.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "training" / "profiles" / "slurm-gpu.toml"


def test_example_profile_requests_resources_per_job_kind() -> None:
    profile = load_profile(EXAMPLE)
    train = profile.sbatch_options("train")
    assert {"--partition=gpu", "--cpus-per-task=8", "--gres=gpu:1", "--mem=64G", "--time=12:00:00"} <= set(
        train
    )
    assert "--requeue" in train and "--gres=gpu:1" not in profile.sbatch_options("cache")
    assert profile.device == "cuda" and profile.max_retries == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[resources.train]\ngpu = 1\n", "unknown key"),
        ("[resources.train]\ncpus = 0\n", "cpus must be an integer >= 1"),
        ("[resources.train]\nmem = '16 GB'\n", "mem must look like"),
        ("[jobs]\ndevice = 'tpu'\n", "device must be auto, cpu or cuda"),
        ("[jobs]\nmax_retries = -1\n", "max_retries"),
        ("[slurm\n", "invalid TOML"),
    ],
)
def test_bad_profiles_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(tmp_path / "p.toml")


def test_bad_command_line_is_one_error_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gliodeploy.cli",
            "sweep",
            "run",
            str(tmp_path / "missing.toml"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    status = subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", "sweep", "status", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert status.returncode != 0 and "not a sweep" in status.stderr and "Traceback" not in status.stderr


def test_slurm_scripts_resume_folds_and_chain_dependencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,image,label,scanner,site,split\n")
    configs = [write_tiny_experiment(tmp_path / f"{n}.toml", name=n) for n in ("a", "b")]
    plan = create_plan(
        configs, tmp_path / "sweep", launcher="slurm", profile=load_profile(EXAMPLE), manifest=manifest
    )
    with pytest.raises(ConfigError, match="names must differ"):
        create_plan(
            [configs[0], configs[0]],
            tmp_path / "other",
            launcher="slurm",
            profile=plan.profile,
            manifest=manifest,
        )
    submitted: list[list[str]] = []

    def fake_submit(self, plan, script, name, options):  # noqa: ANN001, ANN202 - records, never runs
        (plan.path / f"{name}.sbatch").write_text(script)
        submitted.append([name, *options])
        return str(len(submitted))

    monkeypatch.setattr(SlurmLauncher, "_submit", fake_submit)
    SlurmLauncher(running_job="99").submit_round(plan, 1, {"b": [1]})
    script = (plan.path / "b.r1.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --requeue" in script
    assert '--fold "${SLURM_ARRAY_TASK_ID}" --resume' in script and "export OMP_NUM_THREADS=8" in script
    assert submitted[0] == ["b.r1", "--array=1"]
    assert submitted[1] == ["finalize.r1", "--dependency=afterany:1:99"]  # after the array and the caller
