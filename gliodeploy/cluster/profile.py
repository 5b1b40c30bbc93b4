"""The cluster profile: what each job of a sweep asks the scheduler for, and how jobs start.

Example (``training/cluster.toml``)::

    [slurm]
    partition = "gpu"          # default partition of every job
    account = "my-project"     # optional; qos too
    requeue = true             # a pre-empted fold is requeued by Slurm and continues (--resume)
    extra = ["--constraint=a100"]

    [jobs]
    command = "gliodeploy"     # how jobs call gliodeploy (default: this Python -m gliodeploy.cli)
    setup = ["module load cuda/12.4", "source /opt/venvs/gliodeploy/bin/activate"]
    device = "cuda"            # gliodeploy train --device
    max_retries = 2            # resubmissions of unfinished folds before the sweep fails
    evaluate_args = ["--bootstrap", "2000"]

    [env]                      # exported in every job
    OMP_NUM_THREADS = "8"

    [resources.cache]          # building the shared preprocessing cache (once)
    cpus = 8
    mem = "32G"
    time = "01:00:00"
    [resources.train]          # one fold
    cpus = 8
    gpus = 1
    mem = "64G"
    time = "12:00:00"
    [resources.finalize]       # resubmission check, OOF assembly, evaluation
    cpus = 4
    mem = "16G"
    time = "01:00:00"
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gliodeploy.errors import ConfigError
from gliodeploy.training.config import _check_keys, _table, tomllib

#: Job kinds of a sweep, in the order they run.
JOB_KINDS = ("cache", "train", "finalize")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True)
class Resources:
    """What one job asks for (Slurm: ``--cpus-per-task``, ``--gres=gpu:N``, ``--mem``, ``--time``)."""

    cpus: int = 1
    gpus: int = 0
    mem: str | None = None  # "16G"; None: the partition's default
    time: str | None = None  # "HH:MM:SS" or "D-HH:MM:SS"; None: the partition's default
    partition: str | None = None  # overrides [slurm].partition for this kind of job

    def sbatch_options(self) -> list[str]:
        """The ``sbatch`` options of these resources."""
        opts = [f"--cpus-per-task={self.cpus}"]
        if self.gpus:
            opts.append(f"--gres=gpu:{self.gpus}")
        if self.mem:
            opts.append(f"--mem={self.mem}")
        if self.time:
            opts.append(f"--time={self.time}")
        if self.partition:
            opts.append(f"--partition={self.partition}")
        return opts


def default_command() -> list[str]:
    """How jobs call gliodeploy by default: this very interpreter (a shared file system is assumed)."""
    return [sys.executable, "-m", "gliodeploy.cli"]


@dataclass(frozen=True)
class ClusterProfile:
    """Per-job resources, Slurm options, the command jobs run and the retry budget."""

    resources: dict[str, Resources] = field(default_factory=lambda: {k: Resources() for k in JOB_KINDS})
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    requeue: bool = True
    extra: tuple[str, ...] = ()
    command: tuple[str, ...] = field(default_factory=lambda: tuple(default_command()))
    setup: tuple[str, ...] = ()
    device: str = "auto"
    max_retries: int = 2
    evaluate_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def sbatch_options(self, kind: str) -> list[str]:
        """Every ``#SBATCH`` option of a job of ``kind`` (``cache``, ``train`` or ``finalize``)."""
        opts = []
        for name, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos)):
            if value:
                opts.append(f"--{name}={value}")
        opts += self.resources[kind].sbatch_options()  # a per-kind partition comes last and wins
        if kind == "train" and self.requeue:
            opts.append("--requeue")
        return opts + list(self.extra)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``sweep.json``)."""
        d = asdict(self)
        d["resources"] = {k: asdict(v) for k, v in self.resources.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterProfile:
        """Inverse of :meth:`to_dict`."""
        tuples = {k: tuple(d[k]) for k in ("extra", "command", "setup", "evaluate_args")}
        resources = {k: Resources(**v) for k, v in d["resources"].items()}
        return cls(**{**d, **tuples, "resources": resources})


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a string or a list of strings (got {value!r})")
    return tuple(value)


def _resources(table: dict[str, Any], where: str) -> Resources:
    _check_keys(table, {"cpus", "gpus", "mem", "time", "partition"}, where)
    r = Resources(**table)
    for name, low in (("cpus", 1), ("gpus", 0)):
        v = getattr(r, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(f"{where}.{name} must be an integer >= {low} (got {v!r})")
    if r.mem is not None and not (isinstance(r.mem, str) and _MEM_RE.match(r.mem)):
        raise ConfigError(f"{where}.mem must look like '16G' or '4000M' (got {r.mem!r})")
    if r.time is not None and not (isinstance(r.time, str) and _TIME_RE.match(r.time)):
        raise ConfigError(f"{where}.time must look like '12:00:00' or '1-00:00:00' (got {r.time!r})")
    return r


def parse_profile(doc: dict[str, Any], where: str = "profile") -> ClusterProfile:
    """A :class:`ClusterProfile` from a parsed TOML document (ConfigError for unknown keys or bad values)."""
    _check_keys(doc, {"slurm", "jobs", "env", "resources"}, where)
    slurm = _table(doc, "slurm", where)
    _check_keys(slurm, {"partition", "account", "qos", "requeue", "extra"}, f"{where} [slurm]")
    jobs = _table(doc, "jobs", where)
    _check_keys(jobs, {"command", "setup", "device", "max_retries", "evaluate_args"}, f"{where} [jobs]")
    env = _table(doc, "env", where)
    if not all(isinstance(v, str) and re.match(r"^[A-Za-z_]\w*$", k) for k, v in env.items()):
        raise ConfigError(f"{where} [env]: names must be shell variable names and values strings")
    res = _table(doc, "resources", where)
    _check_keys(res, set(JOB_KINDS), f"{where} [resources]")
    retries = jobs.get("max_retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"{where} [jobs].max_retries must be an integer >= 0 (got {retries!r})")
    device = jobs.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{where} [jobs].device must be auto, cpu or cuda (got {device!r})")
    requeue = slurm.get("requeue", True)
    if not isinstance(requeue, bool):
        raise ConfigError(f"{where} [slurm].requeue must be true or false (got {requeue!r})")
    command = _str_list(jobs["command"], f"{where} [jobs].command") if "command" in jobs else None
    return ClusterProfile(
        resources={k: _resources(_table(res, k, where), f"{where} [resources.{k}]") for k in JOB_KINDS},
        partition=slurm.get("partition"),
        account=slurm.get("account"),
        qos=slurm.get("qos"),
        requeue=requeue,
        extra=_str_list(slurm.get("extra", []), f"{where} [slurm].extra"),
        command=command or tuple(default_command()),
        setup=_str_list(jobs.get("setup", []), f"{where} [jobs].setup") if "setup" in jobs else (),
        device=device,
        max_retries=retries,
        evaluate_args=_str_list(jobs.get("evaluate_args", []), f"{where} [jobs].evaluate_args"),
        env=dict(env),
    )


def load_profile(path: str | Path | None) -> ClusterProfile:
    """Read a profile TOML file; ``None`` gives the defaults (1 CPU per job, no GPU, 2 retries)."""
    if path is None:
        return ClusterProfile()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cluster profile not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_profile(doc, str(path))
