"""Launchers of a sweep plan: ``local`` (subprocesses here) and ``slurm`` (``sbatch`` arrays + dependencies).

Both run the same jobs (:mod:`gliodeploy.cluster.sweep`): the cache job, one ``gliodeploy train --fold K
--resume`` per experiment x fold, then the round's finalize job, which resubmits unfinished folds
through the same launcher.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gliodeploy.cluster.sweep import Experiment, SweepPlan, finalize
from gliodeploy.errors import ConfigError, GliodeployError, ModelError

_FOLD = "@FOLD@"  # stands for the array task id in a Slurm script


class SchedulerError(GliodeployError):
    """The scheduler refused a submission or cannot be reached."""

    exit_code = 6


class LocalLauncher:
    """Runs the plan on this machine: ``jobs`` fold processes at a time, finalize in this process."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1 (got {jobs})")
        self.jobs = jobs
        self._next: tuple[int, dict[str, list[int]]] | None = None

    def _process(self, plan: SweepPlan, argv: list[str], log: Path, **event: object) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **plan.profile.env}
            )
            plan.record(event="started", job=str(proc.pid), **event)
            code = proc.wait()
        plan.record(event="ended", job=str(proc.pid), returncode=code, **event)
        return code

    def start(self, plan: SweepPlan) -> None:
        """Cache, every fold, finalize, resubmitted rounds, in order; returns when the sweep has ended."""
        if self._process(plan, plan.cache_argv(), plan.log_dir / "cache.log", kind="cache") != 0:
            raise ModelError(f"the cache job failed; see {plan.log_dir / 'cache.log'}")
        os.environ.update(plan.profile.env)  # finalize runs in this process, as a job would
        todo: tuple[int, dict[str, list[int]]] | None = (
            0,
            {e.name: list(range(e.folds)) for e in plan.experiments},
        )
        while todo is not None:
            round_, folds = todo
            self._next = None
            self._train(plan, round_, folds)
            finalize(plan, round_, self)  # calls submit_round when folds are left
            todo = self._next

    def submit_round(self, plan: SweepPlan, round_: int, folds: dict[str, list[int]]) -> None:
        """Queue round ``round_`` (experiment name -> fold numbers); :meth:`start` runs it next."""
        self._next = (round_, folds)

    def _train(self, plan: SweepPlan, round_: int, folds: dict[str, list[int]]) -> None:
        tasks = [(plan.experiment(name), k) for name, ks in folds.items() for k in ks]

        def one(task: tuple[Experiment, int]) -> int:
            exp, k = task
            log = plan.log_dir / exp.name / f"fold_{k}.r{round_}.log"
            return self._process(
                plan, plan.train_argv(exp, k), log, kind="train", experiment=exp.name, fold=k, round=round_
            )

        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, tasks))


class SlurmLauncher:
    """Submits the plan with ``sbatch``: the cache job, one array per experiment and round (task id =
    fold), and the round's finalize job (``afterany`` on the arrays, so a failed or cancelled fold
    still lets it run and resubmit)."""

    def __init__(self, sbatch: str = "sbatch", running_job: str | None = None) -> None:
        self.sbatch = sbatch
        self.running_job = running_job  # the finalize job that submits a resubmission round

    def _script(self, plan: SweepPlan, kind: str, name: str, argv: list[str], output: Path) -> str:
        lines = ["#!/bin/bash", f"#SBATCH --job-name=gd-{name}", f"#SBATCH --output={output}"]
        lines += [f"#SBATCH {opt}" for opt in plan.profile.sbatch_options(kind)]
        lines += ["#SBATCH --open-mode=append", "set -eo pipefail", *plan.profile.setup]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in plan.profile.env.items()]
        command = shlex.join(argv).replace(_FOLD, '"${SLURM_ARRAY_TASK_ID}"')
        return "\n".join([*lines, f"exec {command}", ""])

    def _submit(self, plan: SweepPlan, script: str, name: str, options: list[str]) -> str:
        """Write ``SWEEP/slurm/<name>.sbatch``, submit it, return the job id."""
        path = plan.path / "slurm" / f"{name}.sbatch"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="utf-8")
        if shutil.which(self.sbatch) is None:
            raise SchedulerError(f"{self.sbatch} not found: is this a Slurm login node?")
        proc = subprocess.run(
            [self.sbatch, "--parsable", *options, str(path)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SchedulerError(f"sbatch {path} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout.strip().split(";")[0]

    def start(self, plan: SweepPlan) -> None:
        """Submit the cache job and round 0; returns at once (``gliodeploy sweep status`` follows it)."""
        script = self._script(plan, "cache", "cache", plan.cache_argv(), plan.log_dir / "cache.%j.log")
        job = self._submit(plan, script, "cache", [])
        plan.record(kind="cache", event="submitted", job=job)
        folds = {e.name: list(range(e.folds)) for e in plan.experiments}
        self.submit_round(plan, 0, folds, after=f"afterok:{job}")

    def submit_round(
        self, plan: SweepPlan, round_: int, folds: dict[str, list[int]], after: str | None = None
    ) -> None:
        """One array per experiment (its unfinished ``folds``), then the round's finalize job."""
        arrays = []
        for name, ks in folds.items():
            exp = plan.experiment(name)
            out = plan.log_dir / name / f"fold_%a.r{round_}.%A.log"
            out.parent.mkdir(parents=True, exist_ok=True)  # Slurm does not create it: the job would die
            script = self._script(plan, "train", f"{name}-r{round_}", plan.train_argv(exp, _FOLD), out)
            options = [f"--array={','.join(map(str, ks))}"]
            if after:  # never pending forever behind a failed cache job
                options += [f"--dependency={after}", "--kill-on-invalid-dep=yes"]
            job = self._submit(plan, script, f"{name}.r{round_}", options)
            arrays.append(job)
            for k in ks:
                plan.record(
                    kind="train", event="submitted", job=f"{job}_{k}", experiment=name, fold=k, round=round_
                )
        # Inside a finalize job (a resubmission), the next finalize also waits for this one to end: the
        # rounds' assembly, evaluation and result.json never overlap.
        if self.running_job:
            arrays.append(self.running_job)
        argv = plan.finalize_argv(round_)
        script = self._script(
            plan, "finalize", f"finalize-r{round_}", argv, plan.log_dir / f"finalize.r{round_}.%j.log"
        )
        job = self._submit(plan, script, f"finalize.r{round_}", [f"--dependency=afterany:{':'.join(arrays)}"])
        plan.record(kind="finalize", event="submitted", job=job, round=round_)

    @staticmethod
    def job_states(plan: SweepPlan) -> dict[str, str]:
        """Job id (``ARRAY_TASK`` for folds) -> Slurm state, from squeue (and sacct when accounting runs)."""
        states: dict[str, str] = {}
        queries = [
            ["squeue", "--me", "--array", "--states=all", "--noheader", "--format=%i|%T"],
            ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State"],
        ]
        for argv in queries:
            if shutil.which(argv[0]) is None:
                continue
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:  # e.g. sacct without accounting storage
                continue
            for line in proc.stdout.splitlines():
                job, _, state = line.strip().partition("|")
                if job and state:
                    states.setdefault(job, state)
        return states


def make_launcher(
    plan: SweepPlan, jobs: int = 1, running_job: str | None = None
) -> LocalLauncher | SlurmLauncher:
    """The launcher the plan names (``running_job``: the Slurm job calling it, if any)."""
    return SlurmLauncher(running_job=running_job) if plan.launcher == "slurm" else LocalLauncher(jobs)
