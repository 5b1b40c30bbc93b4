"""``gliodeploy sweep``: train experiment configs x folds on Slurm or locally; ``gliodeploy pack-env``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

sweep = typer.Typer(
    help=(
        "Train one or many experiment configs x their folds as one sweep, on a Slurm cluster (sbatch "
        "arrays) or on this machine: the preprocessing cache first, one job per fold, unfinished folds "
        "resubmitted with --resume, OOF assembly and evaluation at the end. See training/README.md."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)

SWEEP_DIR = typer.Argument(..., help="Sweep folder (holds sweep.json, jobs.jsonl, runs/, logs/).")


@sweep.command("run")
def run(
    configs: list[Path] = typer.Argument(..., help="Experiment TOML files, e.g. training/*.toml."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder; runs go to OUT/runs/<experiment name>."),
    launcher: str = typer.Option(
        "local", "--launcher", help="slurm (sbatch arrays, returns once submitted) or local (this machine)."
    ),
    profile: Path | None = typer.Option(
        None, "--profile", help="Cluster profile TOML: per-job resources, Slurm options, retries."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", "-m", help="Cohort manifest CSV for every experiment ([data].manifest)."
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="Preprocessing cache root (default <manifest folder>/cache)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="local: folds trained at the same time."),
) -> None:
    """Submit (slurm) or run (local) a whole sweep.

    Jobs: build the shared preprocessing cache once; then one `gliodeploy train CFG --fold K --resume`
    per experiment x fold; then a finalize job after every fold job of the round, which resubmits
    failed or pre-empted folds (they continue from their last epoch) up to [jobs].max_retries times,
    assembles the out-of-fold predictions and runs `gliodeploy evaluate`. Rerunning the same command
    on the same --out continues an interrupted sweep. Follow it with `gliodeploy sweep status OUT`.
    """
    from gliodeploy.cluster.launchers import make_launcher
    from gliodeploy.cluster.profile import load_profile
    from gliodeploy.cluster.sweep import create_plan, load_plan

    plan = create_plan(
        configs, out, launcher=launcher, profile=load_profile(profile), manifest=manifest, cache=cache
    )
    n = sum(e.folds for e in plan.experiments)
    make_launcher(plan, jobs).start(plan)
    if launcher == "slurm":
        typer.echo(
            f"{plan.path}: submitted {len(plan.experiments)} experiment(s), {n} fold jobs; "
            f"follow with: gliodeploy sweep status {plan.path}"
        )
        return
    result = json.loads(load_plan(plan.path).result_file.read_text(encoding="utf-8"))
    typer.echo(f"{plan.path}: {result['state']} after {result['round'] + 1} round(s) ({n} fold jobs)")
    if result["state"] != "done":
        raise typer.Exit(1)


@sweep.command("status")
def status(
    sweep_dir: Path = SWEEP_DIR,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Pending / running / done / failed per experiment and fold, read back from the run directories
    (done.json, log.jsonl) and, for a Slurm sweep, from squeue/sacct. Exit code 1 if the sweep failed."""
    from gliodeploy.cluster.launchers import SlurmLauncher
    from gliodeploy.cluster.sweep import STATES, load_plan, sweep_status

    plan = load_plan(sweep_dir)
    scheduler = SlurmLauncher.job_states(plan) if plan.launcher == "slurm" else None
    folds = sweep_status(plan, scheduler)
    result = json.loads(plan.result_file.read_text(encoding="utf-8")) if plan.result_file.is_file() else None
    if as_json:
        typer.echo(
            json.dumps({"sweep": str(plan.path), "result": result, "folds": [asdict(f) for f in folds]})
        )
    else:
        counts = ", ".join(f"{sum(f.state == s for f in folds)} {s}" for s in STATES)
        typer.echo(
            f"{plan.path} ({plan.launcher}): {counts}"
            + (f"; last finalize: {result['state']}" if result else "")
        )
        typer.echo(f"{'experiment':<24} {'fold':>4}  {'state':<8} {'epochs':>7}  {'tries':>5}  job")
        for f in folds:
            job = f"{f.job} ({f.scheduler_state})" if f.scheduler_state else (f.job or "-")
            epochs = f"{f.epochs_done}/{f.epochs}"
            typer.echo(f"{f.experiment:<24} {f.fold:>4}  {f.state:<8} {epochs:>7}  {f.attempts:>5}  {job}")
    if result and result["state"] == "failed":
        raise typer.Exit(1)


@sweep.command("cache")
def cache_job(sweep_dir: Path = SWEEP_DIR) -> None:
    """Job step: prepare every run of the sweep (plans, splits) and build the shared preprocessing cache."""
    from gliodeploy.cluster.sweep import build_cache, load_plan

    build_cache(load_plan(sweep_dir))


@sweep.command("finalize")
def finalize_job(
    sweep_dir: Path = SWEEP_DIR,
    round_: int = typer.Option(0, "--round", min=0, help="Resubmission round that just ended (0 = first)."),
) -> None:
    """Job step after a round of fold jobs: resubmit unfinished folds, or assemble OOF and evaluate."""
    import os

    from gliodeploy.cluster.launchers import make_launcher
    from gliodeploy.cluster.sweep import finalize, load_plan

    plan = load_plan(sweep_dir)
    result = finalize(plan, round_, make_launcher(plan, running_job=os.environ.get("SLURM_JOB_ID")))
    typer.echo(f"{plan.path}: round {round_}: {result['state']}")
    if result["state"] == "failed":
        for line in result["errors"]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1)


def pack_env(
    out: Path = typer.Argument(..., help="Tarball to write, e.g. envs/gliodeploy-py312.tar.gz."),
    python: str | None = typer.Option(
        None,
        "--python",
        help="Target interpreter: the Triton image's, e.g. /usr/bin/python3 (default: this Python's base).",
    ),
    extra: list[str] = typer.Option(
        [], "--extra", help="More requirements, e.g. onnxruntime for the local python-backend ONNX model."
    ),
    pip_arg: list[str] = typer.Option(
        [],
        "--pip-arg",
        help="Passed to pip install, e.g. --pip-arg=--no-index --pip-arg=--find-links=wheels.",
    ),
) -> None:
    """Pack the Python environment of the server-side preprocessing model (python backend) for NVIDIA's
    stock Triton image: a relocatable virtual environment with numpy<2, SimpleITK and gliodeploy.

    Build it with the image's own interpreter so that the Python version matches the image's python
    backend stub, for example inside the image: see deploy/kubernetes/README.md. Use it through
    Triton's EXECUTION_ENV_PATH, or unpacked with its bin/ first on the server's PATH.
    """
    from gliodeploy.cluster.packenv import build_env

    info = build_env(out, python=python, extra=tuple(extra), pip_args=tuple(pip_arg))
    typer.echo(
        f"{out}: Python {info['python']} ({info['interpreter']}), {', '.join(info['requirements'])} "
        f"+ gliodeploy {info['gliodeploy']}; {info['bytes'] / 1e6:.0f} MB in {info['seconds']} s"
    )
