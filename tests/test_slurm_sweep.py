"""`gliodeploy sweep` on a real one-node Slurm cluster (tests/slurm_cluster.py), against a local run.

2 experiment configs x 2 folds (tiny grid, 10 short epochs). The same sweep runs first with the local
launcher (the reference), then on Slurm, where one fold job is cancelled (scancel) mid-fold: the
round's finalize job (afterany) resubmits it with --resume, it continues from its last epoch, and
both runs end with byte-identical out-of-fold predictions (training is deterministic on CPU with fixed
seeds), assembled and evaluated. Slurm is installed with apt when missing; if it cannot be installed
or started the test fails with the reason (it is never skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster
from tiny_experiment import write_tiny_experiment

from gliodeploy.cluster.launchers import SlurmLauncher
from gliodeploy.cluster.sweep import fold_jobs, load_plan, sweep_status
from gliodeploy.training.rundir import RunDir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning"),
]
EPOCHS = 8
PROFILE = """\
[jobs]
device = "cpu"
max_retries = 2
evaluate_args = ["--bootstrap", "100", "--no-baseline", "--no-localisation"]
[env]
OMP_NUM_THREADS = "1"   # the same arithmetic in every job and in the local run
[resources.train]
cpus = 1
time = "00:10:00"
"""


def _gliodeploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("sweep")
    manifest = Path(generate_cohort(root / "cohort", n=24, seed=0, size="tiny", progress=False))
    configs = [
        write_tiny_experiment(
            root / f"{name}.toml",
            name=name,
            training={"epochs": EPOCHS, "seed": seed},
            data={"manifest": str(manifest)},
        )
        for name, seed in (("tiny_a", 1), ("tiny_b", 2))
    ]
    (root / "cluster.toml").write_text(PROFILE)
    return configs, root / "cluster.toml"


@pytest.fixture(scope="module")
def local_sweep(sweep_inputs: tuple[list[Path], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    configs, profile = sweep_inputs
    out = tmp_path_factory.mktemp("local") / "sweep"
    tic = time.monotonic()
    proc = _gliodeploy(
        "sweep",
        "run",
        *map(str, configs),
        "--out",
        str(out),
        "--launcher",
        "local",
        "--profile",
        str(profile),
        "-j",
        "2",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nlocal sweep (2 configs x 2 folds, 2 at a time): {time.monotonic() - tic:.0f} s")
    return out


def test_local_launcher_runs_the_whole_plan(local_sweep: Path) -> None:
    plan = load_plan(local_sweep)
    assert json.loads(plan.result_file.read_text())["state"] == "done"
    assert {f.state for f in sweep_status(plan)} == {"done"}
    for exp in plan.experiments:
        assert RunDir(exp.run).is_complete() and (Path(exp.run) / "evaluation" / "metrics.json").is_file()
    status = _gliodeploy("sweep", "status", str(local_sweep))
    assert status.returncode == 0 and "4 done" in status.stdout, status.stdout + status.stderr


def _logs(plan) -> str:  # noqa: ANN001
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(plan.log_dir.rglob("*.log")))


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.1):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_slurm_sweep_survives_a_cancelled_fold_and_matches_local(
    sweep_inputs: tuple[list[Path], Path], local_sweep: Path, tmp_path: Path
) -> None:
    configs, profile = sweep_inputs
    # The daemons' sockets and spool folders: a short path.
    with slurm_cluster(Path(f"/tmp/gd-slurm-{os.getpid()}-{time.time_ns() % 10**6}")) as env:
        env = {**env, "OMP_NUM_THREADS": "1"}
        out = tmp_path / "sweep"
        tic = time.monotonic()
        options = ["--out", str(out), "--launcher", "slurm", "--profile", str(profile)]
        proc = _gliodeploy("sweep", "run", *map(str, configs), *options, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        plan = load_plan(out)
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # squeue from this process (status)
        try:
            seen: dict[tuple[str, int], set[str]] = {}

            def observe() -> list:
                folds = sweep_status(plan, SlurmLauncher.job_states(plan))
                for f in folds:
                    seen.setdefault((f.experiment, f.fold), set()).add(f.state)
                return folds

            # Cancel tiny_b's first fold job that has finished an epoch and not the fold.
            run_b = RunDir(plan.experiment("tiny_b").run)

            def in_the_middle() -> int | None:
                observe()
                if (
                    plan.result_file.is_file()
                    and json.loads(plan.result_file.read_text())["state"] == "failed"
                ):
                    raise AssertionError(f"the sweep failed before the kill:\n{_logs(plan)}")
                for k in (0, 1):
                    if 1 <= len(run_b.fold_log(k)) < EPOCHS - 2 and not run_b.is_fold_done(k):
                        return k + 1  # truthy
                return None

            killed = _wait_for(in_the_middle, 120, "a tiny_b fold job in the middle of its fold") - 1
            job = fold_jobs(plan)[("tiny_b", killed)][-1]["job"]
            subprocess.run(["scancel", job], env=env, check=True)
            kill_time = time.monotonic() - tic
            time.sleep(0.5)  # the job is gone; what it wrote stays
            before = run_b.log(killed).read_text()
            epochs_at_kill = len(before.splitlines())
            assert epochs_at_kill < EPOCHS and not run_b.is_fold_done(killed)
            _wait_for(
                lambda: (
                    "failed" in {f.state for f in observe() if (f.experiment, f.fold) == ("tiny_b", killed)}
                ),
                10,
                "status to report the cancelled fold as failed",
            )

            def finished() -> dict | None:
                observe()
                if plan.result_file.is_file():
                    result = json.loads(plan.result_file.read_text())
                    return result if result["state"] in ("done", "failed") else None
                return None

            result = _wait_for(finished, 150, "the sweep to finish", poll=0.5)
            elapsed = time.monotonic() - tic
            final = observe()
        finally:
            os.environ.pop("SLURM_CONF", None)
        assert result["state"] == "done", f"{result}\n{_logs(plan)}"
        assert result["round"] == 1  # exactly one resubmission round
        print(
            f"\nslurm sweep (2 configs x 2 folds x {EPOCHS} epochs): {elapsed:.0f} s; cancelled tiny_b fold "
            f"{killed} ({job}) at {kill_time:.0f} s after {epochs_at_kill}/{EPOCHS} epochs; resubmitted "
            f"in round 1 and resumed"
        )

        # The resubmitted job continued the fold: the epochs logged before the kill are kept as they were.
        after = run_b.log(killed).read_text()
        assert after.startswith(before) and len(after.splitlines()) == EPOCHS
        submissions = [e for e in fold_jobs(plan)[("tiny_b", killed)] if e["event"] == "submitted"]
        assert [e["round"] for e in submissions] == [0, 1]
        assert "--resume" in (out / "slurm" / "tiny_b.r1.sbatch").read_text()

        # Progress was read back while it ran, and everything ends done.
        assert {f.state for f in final} == {"done"}
        assert all("running" in states for states in seen.values()), seen
        assert "failed" in seen[("tiny_b", killed)]
        status = _gliodeploy("sweep", "status", "--json", str(out), env=env)
        report = json.loads(status.stdout)
        killed_row = next(f for f in report["folds"] if (f["experiment"], f["fold"]) == ("tiny_b", killed))
        assert killed_row["attempts"] == 2 and killed_row["scheduler_state"] == "COMPLETED"

    # Same OOF predictions as the local run, byte for byte; each run assembled and evaluated.
    reference = load_plan(local_sweep)
    for exp in plan.experiments:
        ours, theirs = RunDir(exp.run), RunDir(reference.experiment(exp.name).run)
        assert ours.oof_csv.read_text() == theirs.oof_csv.read_text(), exp.name
        assert (Path(exp.run) / "evaluation" / "metrics.json").is_file()
