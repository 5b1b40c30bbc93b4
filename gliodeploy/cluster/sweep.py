"""A sweep: one or many experiment configs x their folds, trained by a launcher (local or Slurm).

The plan is the same whatever runs it::

    cache     gliodeploy sweep cache SWEEP             plans.json + splits.json of every run, the shared
                                                        preprocessing cache built once
    train     gliodeploy train CFG --out RUN --fold K --resume    (one job per experiment x fold)
    finalize  gliodeploy sweep finalize SWEEP --round R
              after every fold job of round R ended, successfully or not: folds without done.json are
              resubmitted (round R+1, ``--resume`` continues them from their last epoch) until
              ``max_retries``; a run whose folds are all done gets its OOF predictions assembled
              (``gliodeploy train --resume``) and is evaluated (``gliodeploy evaluate``).

Everything a launcher needs is in ``SWEEP/sweep.json``; what it submitted or ran is appended to
``SWEEP/jobs.jsonl``; fold progress is read back from the run directories (``done.json``,
``log.jsonl``), so ``gliodeploy sweep status`` works from any machine that sees the folder.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from gliodeploy.cluster.profile import ClusterProfile
from gliodeploy.errors import ConfigError, GliodeployError, ModelError
from gliodeploy.training.rundir import RunDir
from gliodeploy.utils.atomic import atomic_write

LAUNCHERS = ("local", "slurm")
PLAN_FILE = "sweep.json"
JOBS_FILE = "jobs.jsonl"
RESULT_FILE = "result.json"
#: Fold states shown by ``gliodeploy sweep status``.
STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class Experiment:
    """One experiment of the sweep: its config, run directory, manifest and number of folds."""

    name: str
    config: str
    run: str
    manifest: str
    folds: int
    epochs: int


@dataclass(frozen=True)
class SweepPlan:
    """Everything the jobs of a sweep need (``SWEEP/sweep.json``)."""

    path: Path
    launcher: str
    experiments: tuple[Experiment, ...]
    profile: ClusterProfile
    cache: str | None = None

    # -- files ------------------------------------------------------------------------------------
    @property
    def plan_file(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def jobs_file(self) -> Path:
        return self.path / JOBS_FILE

    @property
    def result_file(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"

    def experiment(self, name: str) -> Experiment:
        for e in self.experiments:
            if e.name == name:
                return e
        raise ConfigError(f"{self.path}: no experiment named {name!r} in this sweep")

    def to_dict(self) -> dict[str, Any]:
        return {
            "launcher": self.launcher,
            "cache": self.cache,
            "experiments": [asdict(e) for e in self.experiments],
            "profile": self.profile.to_dict(),
        }

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        atomic_write(self.plan_file, json.dumps(self.to_dict(), indent=2) + "\n")

    # -- the jobs' command lines ------------------------------------------------------------------
    def gliodeploy(self, *args: str) -> list[str]:
        """A gliodeploy command line as the jobs run it."""
        return [*self.profile.command, *args]

    def cache_argv(self) -> list[str]:
        return self.gliodeploy("sweep", "cache", str(self.path))

    def train_argv(self, exp: Experiment, fold: int | str) -> list[str]:
        """``gliodeploy train ... --fold K --resume`` (``fold`` may be a shell expression for arrays)."""
        argv = self.gliodeploy("train", exp.config, "--manifest", exp.manifest, "--out", exp.run)
        argv += ["--fold", str(fold), "--resume", "--quiet", "--device", self.profile.device]
        return argv + (["--cache", self.cache] if self.cache else [])

    def finalize_argv(self, round_: int) -> list[str]:
        return self.gliodeploy("sweep", "finalize", str(self.path), "--round", str(round_))

    def record(self, **event: Any) -> None:
        """Append one event (a submitted job, a local process that started or ended) to jobs.jsonl."""
        line = json.dumps({"time": round(time.time(), 3), **event}) + "\n"
        with open(self.jobs_file, "a", encoding="utf-8") as fh:  # O_APPEND: one line per write
            fh.write(line)

    def events(self) -> list[dict[str, Any]]:
        if not self.jobs_file.is_file():
            return []
        return [json.loads(x) for x in self.jobs_file.read_text(encoding="utf-8").splitlines() if x.strip()]


def create_plan(
    configs: Iterable[Path],
    out: Path,
    *,
    launcher: str,
    profile: ClusterProfile,
    manifest: Path | None = None,
    cache: Path | None = None,
) -> SweepPlan:
    """Check every experiment config and write ``OUT/sweep.json`` (runs in ``OUT/runs/<name>``).

    A sweep folder that already holds a plan is continued only with the same experiments.
    """
    from gliodeploy.training.config import load_experiment

    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; use {' or '.join(LAUNCHERS)}")
    out = out.resolve()
    experiments = []
    for path in configs:
        cfg = load_experiment(path)
        source = manifest or cfg.manifest
        if source is None:
            raise ConfigError(f"{path}: no manifest (set [data].manifest or pass --manifest)")
        if not Path(source).is_file():
            raise ConfigError(f"{path}: manifest not found: {source}")
        experiments.append(
            Experiment(
                name=cfg.name,
                config=str(Path(path).resolve()),
                run=str(out / "runs" / cfg.name),
                manifest=str(Path(source).resolve()),
                folds=cfg.training.folds,
                epochs=cfg.training.epochs,
            )
        )
    if not experiments:
        raise ConfigError("no experiment config given")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment names must differ within a sweep (got {names})")
    plan = SweepPlan(
        out, launcher, tuple(experiments), profile, str(cache.resolve()) if cache is not None else None
    )
    if plan.plan_file.is_file():
        old = load_plan(out)
        if [asdict(e) for e in old.experiments] != [asdict(e) for e in plan.experiments]:
            raise ConfigError(f"{out} holds another sweep (other experiments); use a new --out")
    plan.save()
    return plan


def load_plan(path: str | Path) -> SweepPlan:
    """Read ``SWEEP/sweep.json`` (ModelError if it is missing or corrupt)."""
    path = Path(path).resolve()
    try:
        d = json.loads((path / PLAN_FILE).read_text(encoding="utf-8"))
        return SweepPlan(
            path,
            d["launcher"],
            tuple(Experiment(**e) for e in d["experiments"]),
            ClusterProfile.from_dict(d["profile"]),
            d.get("cache"),
        )
    except FileNotFoundError as exc:
        raise ModelError(f"{path} is not a sweep: no {PLAN_FILE}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"corrupt {path / PLAN_FILE}: {exc}") from exc


# -- the jobs ------------------------------------------------------------------------------------
def build_cache(plan: SweepPlan) -> None:
    """The ``cache`` job: prepare every run (plans.json, splits.json) and fill the shared cache once.

    Runs before the fold jobs so that they neither race to write splits.json nor preprocess the cohort
    at the same time; ``prepare_run`` is exactly what ``gliodeploy train`` does first.
    """
    from gliodeploy.training.config import load_experiment
    from gliodeploy.training.loop import prepare_run

    for exp in plan.experiments:
        cfg = dataclasses.replace(load_experiment(exp.config), manifest=Path(exp.manifest))
        prepare_run(cfg, exp.run, cache_root=plan.cache, progress=False)


def missing_folds(plan: SweepPlan) -> dict[str, list[int]]:
    """Folds without ``done.json``, per experiment (experiments with none are left out)."""
    out = {}
    for exp in plan.experiments:
        run = RunDir(exp.run)
        todo = [k for k in range(exp.folds) if not run.is_fold_done(k)]
        if todo:
            out[exp.name] = todo
    return out


class Launcher(Protocol):
    """What :func:`finalize` needs from a launcher: start one round of fold jobs and its finalize job."""

    def submit_round(self, plan: SweepPlan, round_: int, folds: dict[str, list[int]]) -> None: ...


def run_cli(args: list[str]) -> None:
    """Run a ``gliodeploy`` command in this process, exactly as typed (one import of torch per job)."""
    import click
    import typer

    from gliodeploy.cli import app

    try:
        code = typer.main.get_command(app).main(args, prog_name="gliodeploy", standalone_mode=False)
    except click.ClickException as exc:
        raise ConfigError(f"gliodeploy {shlex.join(args)}: {exc.format_message()}") from exc
    if code:
        raise ModelError(f"gliodeploy {shlex.join(args)} failed with exit code {code}")


def _evaluation(exp: Experiment) -> Path:
    return Path(exp.run) / "evaluation" / "metrics.json"


def assemble_and_evaluate(plan: SweepPlan, exp: Experiment) -> None:
    """OOF predictions of a run whose folds are all done (``gliodeploy train --resume``), then
    ``gliodeploy evaluate`` with the profile's ``evaluate_args``."""
    cache = ["--cache", plan.cache] if plan.cache else []
    if not RunDir(exp.run).oof_csv.is_file():
        args = ["train", exp.config, "--manifest", exp.manifest, "--out", exp.run, "--resume", "--quiet"]
        run_cli([*args, "--device", plan.profile.device, *cache])
    run_cli(["evaluate", exp.run, "--manifest", exp.manifest, *cache, *plan.profile.evaluate_args])


def finalize(plan: SweepPlan, round_: int, launcher: Launcher) -> dict[str, Any]:
    """The ``finalize`` job of round ``round_``: resubmit unfinished folds, assemble and evaluate the rest.

    Unfinished folds are resubmitted first (round ``round_ + 1``, up to ``max_retries``), so they train
    while finished runs are assembled and evaluated here. Returns (and writes to ``SWEEP/result.json``)
    the round's outcome: ``done`` (every run assembled and evaluated), ``resubmitted`` or ``failed``
    (folds unfinished after ``max_retries`` resubmissions, or an assembly/evaluation failed; a later
    round retries an evaluation that failed).
    """
    missing = missing_folds(plan)
    resubmit = bool(missing) and round_ < plan.profile.max_retries
    if resubmit:
        launcher.submit_round(plan, round_ + 1, missing)
    errors = []
    if missing and not resubmit:
        errors.append(f"folds still unfinished after {round_} resubmission(s): {missing}")
    for exp in plan.experiments:
        if exp.name not in missing and not _evaluation(exp).is_file():
            try:
                assemble_and_evaluate(plan, exp)
            except GliodeployError as exc:
                errors.append(f"{exp.name}: {exc}")
    state = "failed" if errors else "resubmitted" if resubmit else "done"
    result = {"state": state, "round": round_, "missing": missing, "errors": errors, "time": time.time()}
    atomic_write(plan.result_file, json.dumps(result, indent=2) + "\n")
    plan.record(kind="finalize-result", round=round_, state=state, missing=missing)
    return result


# -- progress ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldStatus:
    """One fold's state as ``gliodeploy sweep status`` shows it."""

    experiment: str
    fold: int
    state: str  # pending | running | done | failed
    epochs_done: int
    epochs: int
    job: str | None = None  # scheduler job id or local pid of its latest attempt
    attempts: int = 0
    scheduler_state: str | None = None  # e.g. RUNNING, CANCELLED (slurm), exit code (local)


def fold_jobs(plan: SweepPlan) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Events of each (experiment, fold) in submission order, from jobs.jsonl."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for ev in plan.events():
        if ev.get("kind") == "train":
            out.setdefault((ev["experiment"], int(ev["fold"])), []).append(ev)
    return out


def _epochs_done(run: RunDir, k: int) -> int:
    return len(run.fold_log(k)) if run.log(k).is_file() else 0


def sweep_status(plan: SweepPlan, scheduler_states: dict[str, str] | None = None) -> list[FoldStatus]:
    """Every fold's state: ``done`` from ``done.json``; otherwise the latest job's state
    (``scheduler_states``: job id -> pending/running/failed from the scheduler, or the local events)."""
    jobs = fold_jobs(plan)
    states = scheduler_states or {}
    out = []
    for exp in plan.experiments:
        run = RunDir(exp.run)
        for k in range(exp.folds):
            events = jobs.get((exp.name, k), [])
            submissions = [e for e in events if e.get("event") in ("submitted", "started")]
            job = str(events[-1]["job"]) if events else None
            raw = states.get(job) if job else None
            if run.is_fold_done(k):
                state = "done"
            elif events and events[-1].get("event") == "ended":  # local: the process is gone
                state, raw = "failed", f"exit {events[-1].get('returncode')}"
            elif raw is not None:
                state = raw_state(raw)
            elif events and events[-1].get("event") == "started":
                state = "running"
            elif job is not None and plan.launcher == "slurm" and not scheduler_states:
                state = "pending"  # no scheduler answer (e.g. squeue not on this machine)
            elif job is not None and plan.launcher == "slurm":
                state = "failed"  # ended without done.json, forgotten by the scheduler
            else:
                state = "pending"
            out.append(
                FoldStatus(exp.name, k, state, _epochs_done(run, k), exp.epochs, job, len(submissions), raw)
            )
    return out


#: Slurm job states -> fold states (anything else that ended is a failure).
_SLURM_PENDING = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "SUSPENDED",
}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "RESIZING", "SIGNALING"}


def raw_state(raw: str) -> str:
    """A scheduler's job state (e.g. ``CANCELLED by 0``) as pending / running / done / failed."""
    word = raw.split()[0].rstrip("+").upper() if raw else ""
    if word in _SLURM_PENDING:
        return "pending"
    if word in _SLURM_RUNNING:
        return "running"
    return "failed"  # ended (COMPLETED included: a finished job without done.json did not finish its fold)
