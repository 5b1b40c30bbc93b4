"""A real one-node Slurm cluster on this machine, for tests (imported by tests/test_slurm_sweep.py).

Installs Debian's ``slurm-wlm`` and ``munge`` when missing (root, apt), then starts, in a temporary
folder and on loopback only: ``munged`` (own key and socket), ``slurmctld`` and ``slurmd`` (generated
``slurm.conf``: one node with 2 CPUs, ``select/cons_tres``, no cgroups, no accounting database), free
ports. Nothing is mocked; everything is stopped (by the pids it started) when the context exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PACKAGES = ("slurm-wlm", "munge")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def ensure_installed(timeout: float = 900) -> None:
    """``apt-get install -y slurm-wlm munge`` unless every binary is already there (idempotent)."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and installing it with apt needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=timeout)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    missing = [b for b in BINARIES if not shutil.which(b)]
    if proc.returncode != 0 or missing:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed (missing {missing}):\n{tail}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(root: Path, node: str, cpus: int) -> str:
    return f"""\
ClusterName=gliodeploytest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=2
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with suppress(OSError):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, timeout: float = 60) -> Iterator[dict[str, str]]:
    """Start munged + slurmctld + slurmd under ``root``; yield the environment that talks to them."""
    ensure_installed()
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd must run as root to start jobs (this test runs as a user)")
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(_conf(root, node, cpus))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    key = root / "munge.key"
    started: list[Path] = []
    try:
        subprocess.run(
            ["mungekey", "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True
        )
        key.chmod(0o400)
        munged = ["munged", "--force", f"--socket={root}/munge.socket", f"--key-file={key}"]
        munged += [f"--log-file={root}/log/munged.log", f"--pid-file={root}/munged.pid"]
        munged += [f"--seed-file={root}/munged.seed"]
        subprocess.run(munged, check=True, capture_output=True, timeout=30)
        started.append(root / "munged.pid")
        for daemon in (["slurmctld"], ["slurmd", "-N", node]):
            proc = subprocess.run(daemon, env=env, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise SlurmUnavailable(f"{daemon[0]} did not start: {proc.stderr.strip()}")
            started.append(root / f"{daemon[0]}.pid")
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            state = proc.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.3)
        else:
            log = (root / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
            raise SlurmUnavailable(f"the node never became idle (state {state!r}); slurmctld.log:\n{log}")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--quiet", "--user=root"], env=env, capture_output=True)
        for pid_file in reversed(started):
            _stop(pid_file)
        shutil.rmtree(root, ignore_errors=True)
