"""Run the real ``tritonserver`` binary shipped in the nvidia-pytriton wheel, as a child process.

That binary (Triton 2.51) has the python backend only, so the repository is served with its
``local`` configurations (``--model-config-name=local``): ONNX Runtime inside the python backend.
Facts this module relies on (docs: /work/shared/notes/dependencies.md):

* the backend folder must hold ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
  ``triton_python_backend_stub`` built for this Python version;
* ``LD_LIBRARY_PATH`` needs the wheel's ``nvidia_pytriton.libs`` and this interpreter's LIBDIR,
  and this interpreter's ``bin/`` must come first on ``PATH`` so models import our packages;
* a stub that cannot start leaves the server "loading" forever: startup has a deadline and a
  failed start kills the whole process group and removes its ``/dev/shm`` regions.

Lifecycle guarantees (``gliodeploy serve`` relies on them):

* nothing outlives this process: the server gets ``PR_SET_PDEATHSIG`` (SIGKILL when the thread that
  started it dies, even by SIGKILL), and a tiny stdlib-only *janitor* process, started first, holds
  the read end of a pipe; when this process dies without a clean :meth:`TritonServer.stop` the pipe
  closes and the janitor kills the server's process group (backend stubs included), removes its
  ``/dev/shm`` regions and the private temporary folder;
* :meth:`TritonServer.stop` is quick: SIGINT (Triton unloads the models, bounded by
  ``--exit-timeout-secs``), then SIGKILL of the process group; the temporary folder (backends,
  snapshot, log unless a ``log_file`` was given) is removed;
* by default (``snapshot=True``) the repository is copied into that private (0700) folder, the *copy*
  is verified (``verify``) and served with explicit model loading (no polling): later edits of the
  original cannot change what is served (no time-of-check/time-of-use gap), and the server never
  writes into the user's repository (the python backend writes ``__pycache__`` beside ``model.py``
  whatever ``PYTHONDONTWRITEBYTECODE`` says). The copy follows symlinks and lives in ``$TMPDIR``;
* with ``admin_api=False`` only health, metadata, model configuration and inference are reachable;
  the other API groups are locked behind a header value no client can send.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from gliodeploy.errors import GliodeployError, ServerError

_SHM_DIR = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# API groups a plain user of the model never needs: model load/unload and repository index, shared-memory
# registration, statistics, tracing and log settings. Health, metadata, model configuration (the client
# reads its decision parameters there) and inference stay open.
RESTRICTED_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
ADMIN_HEADER = "gliodeploy-admin-api"

# The janitor: stdlib only and run with ``-I -S`` so it starts in milliseconds whatever the environment.
# It reads "pgid <n>" and "done" lines on stdin; EOF without "done" means its parent died uncleanly.
_JANITOR = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
tmp, prefix, pgid, buf = sys.argv[1], sys.argv[2], 0, b""
while True:
    chunk = os.read(0, 256)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line == b"done":
            sys.exit(0)
        if line.startswith(b"pgid "):
            pgid = int(line[5:])
if pgid:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except OSError:
            break
        time.sleep(0.05)
if os.path.isdir("/dev/shm"):
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
shutil.rmtree(tmp, ignore_errors=True)
"""


class ServerStopRequested(ServerError):
    """:meth:`TritonServer.request_stop` was called (a signal) before the server was ready."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths of the Triton pieces inside the installed nvidia-pytriton package."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_tritonserver() -> TritonInstall:
    """Locate ``tritonserver``, the python backend and its stub in the installed nvidia-pytriton."""
    try:
        import pytriton
    except ImportError:
        raise ServerError("nvidia-pytriton is not installed: pip install 'gliodeploy[serve]'") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / py / "triton_python_backend_stub",
        libs=Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs",
    )
    for what, path in vars(install).items():
        if not path.exists():
            raise ServerError(f"nvidia-pytriton is incomplete: {what} not found at {path}")
    return install


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _libc() -> Any:
    """The C library (for prctl), or None where there is no PR_SET_PDEATHSIG (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(parent_pid: int, libc: Any) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when its parent (thread) dies, even by SIGKILL."""

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


class TritonServer:
    """The bundled Triton server serving ``repo``, as a context manager.

    >>> with TritonServer("model_repository") as server:   # doctest: +SKIP
    ...     print(server.http_url, server.grpc_url)

    Ports default to free loopback ports; ``host`` defaults to loopback (nothing listens on the
    network unless asked). ``model_config_name`` selects ``configs/<name>.pbtxt`` in each model
    folder (``local`` = python backend, the only kind this binary can run).

    ``snapshot=True`` (default) serves a private copy of ``repo`` (see the module docstring); ``verify`` is
    called on what will be served (the copy, with a snapshot) before the server starts, and when it
    returns a mapping its keys are the models loaded explicitly (``--model-control-mode=explicit``).
    ``admin_api=False`` restricts the API to health, metadata, model configuration and inference; the
    library default keeps the full API (tests and benchmarks read statistics), ``gliodeploy serve``
    restricts it. ``exit_timeout`` bounds Triton's graceful shutdown (``--exit-timeout-secs``).
    ``prepare`` is called on the verified private copy before the server starts (``gliodeploy serve``
    writes the CPU engine it chose into the served configuration there); it needs ``snapshot=True``.
    """

    def __init__(
        self,
        repo: str | os.PathLike[str],
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics: bool = False,
        model_config_name: str | None = "local",
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        log_file: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        snapshot: bool = True,
        verify: Callable[[Path], object] | None = None,
        admin_api: bool = True,
        exit_timeout: int = 3,
        prepare: Callable[[Path], object] | None = None,
    ) -> None:
        self.repo = Path(repo).resolve()
        if prepare is not None and not snapshot:
            raise ServerError("prepare edits what is served: it needs snapshot=True, never the user's files")
        self.prepare = prepare
        if not self.repo.is_dir():
            raise ServerError(f"model repository not found: {self.repo}")
        self.host = host
        self.http_port = http_port or free_port(_url_host(host))
        self.grpc_port = grpc_port or free_port(_url_host(host))
        self.metrics_port = free_port(_url_host(host)) if metrics else None
        self.model_config_name = model_config_name
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.snapshot = snapshot
        self.verify = verify
        self.admin_api = admin_api
        self.exit_timeout = max(0, int(exit_timeout))
        self.load_models: list[str] | None = None
        self._user_log = Path(log_file).resolve() if log_file else None
        self._log_path = self._user_log
        self._final_tail: str | None = None
        self._tmp: Path | None = None
        self._served: Path | None = None
        self._log_fh = None
        self._janitor: subprocess.Popen[bytes] | None = None
        self._janitor_fd: int | None = None
        self._stop_requested = False
        self.process: subprocess.Popen[bytes] | None = None
        # Unique shared-memory prefix: cleanup removes exactly this server's regions.
        self.shm_prefix = f"triton_python_backend_shm_region_gliodeploy_{uuid.uuid4().hex[:12]}_"
        # A header value with a line break: no HTTP header or gRPC metadata can carry it, so the locked API
        # groups stay locked even for a local user who reads it from the command line in /proc.
        self._lock_value = f"locked\n{secrets.token_hex(16)}"

    # -- URLs -----------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP/REST endpoint (tritonclient.http form)."""
        return f"{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (tritonclient.grpc form)."""
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` (Prometheus) or None when metrics are off."""
        return f"http://{_url_host(self.host)}:{self.metrics_port}/metrics" if self.metrics_port else None

    @property
    def log_path(self) -> Path | None:
        """File receiving the server's stdout/stderr (a temporary one is removed by :meth:`stop`)."""
        return self._log_path

    @property
    def served_repository(self) -> Path:
        """The folder Triton reads: the private snapshot while one is in use, else ``repo``."""
        return self._served or self.repo

    @property
    def temp_dir(self) -> Path | None:
        """The private temporary folder of a started server (None before start and after stop)."""
        return self._tmp

    # -- lifecycle ------------------------------------------------------------------------------
    def _backend_dir(self, install: TritonInstall, tmp: Path) -> Path:
        backends = tmp / "backends"
        python = backends / "python"
        python.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            os.symlink(install.python_backend / name, python / name)
        os.symlink(install.stub, python / "triton_python_backend_stub")
        return backends

    def _env(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs), libdir, env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "2")
        # No bytecode from Python processes the server starts. The python backend stub embeds Python with an
        # isolated configuration that ignores this variable and writes model.py's __pycache__ beside it:
        # that is one more reason to serve a private snapshot (the default), never the user's folder.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if self._tmp is not None:  # what the server and its models write to temp dies with it
            (self._tmp / "tmp").mkdir(exist_ok=True)
            env["TMPDIR"] = str(self._tmp / "tmp")
        return env

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        """The ``tritonserver`` command line."""
        cmd = [
            str(install.binary),
            f"--model-repository={self.served_repository}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--allow-metrics={'true' if self.metrics_port else 'false'}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={1 if self.verbose else 0}",
        ]
        if self.metrics_port:
            cmd += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        if self.load_models is not None:
            cmd.append("--model-control-mode=explicit")  # exactly the verified models, never a poll
            cmd += [f"--load-model={name}" for name in self.load_models]
        if not self.admin_api:
            lock = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self._lock_value}"
            cmd += [f"--http-restricted-api={lock}", f"--grpc-restricted-protocol={lock}"]
        return cmd

    def request_stop(self) -> None:
        """Ask a starting or running server to stop (safe in a signal handler: it only sets a flag).

        :meth:`start` then raises :class:`ServerStopRequested` before or while waiting for readiness and
        :meth:`wait` returns None; the caller then calls :meth:`stop`.
        """
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called."""
        return self._stop_requested

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise ServerStopRequested("stop requested while the server was starting")

    def start(self) -> TritonServer:
        """Start the server and wait until ``/v2/health/ready``; ServerError (with the log tail) otherwise."""
        if self.process is not None or self._tmp is not None:
            raise ServerError("server already started")
        install = find_tritonserver()
        self._final_tail = None
        try:
            self._check_stop()
            self._tmp = Path(tempfile.mkdtemp(prefix="gliodeploy-triton-"))  # 0700: private
            self._start_janitor(self._tmp)
            if self._user_log is None:
                self._log_path = self._tmp / "tritonserver.log"
            try:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log_fh = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
            except OSError as exc:
                raise ServerError(f"cannot write the server log {self._log_path}: {exc.strerror}") from None
            if self.snapshot:
                self._served = self._copy_snapshot(self._tmp / "repository")
            if self.verify is not None:
                self._run_verify()
            if self.prepare is not None:  # after verification, on the private copy only
                self.prepare(self.served_repository)
            backends = self._backend_dir(install, self._tmp)
            self._check_stop()
            main = threading.current_thread() is threading.main_thread()
            libc = _libc() if main else None  # PDEATHSIG follows the thread: only the main thread's is safe
            self.process = subprocess.Popen(
                self.command(install, backends),
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(install),
                start_new_session=True,  # own process group: stubs die with the server
                preexec_fn=_die_with_parent(os.getpid(), libc) if libc is not None else None,
            )
            self._tell_janitor(f"pgid {self.process.pid}")
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_janitor(self, tmp: Path) -> None:
        read_fd, write_fd = os.pipe()  # both ends non-inheritable: only the janitor gets the read end
        try:
            self._janitor = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _JANITOR, str(tmp), self.shm_prefix],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is not meant for it
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._janitor_fd = write_fd

    def _tell_janitor(self, line: str) -> None:
        if self._janitor_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._janitor_fd, f"{line}\n".encode())

    def _release_janitor(self) -> None:
        """Everything is cleaned: dismiss the janitor (it exits without touching anything)."""
        fd, self._janitor_fd = self._janitor_fd, None
        janitor, self._janitor = self._janitor, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, b"done\n")
            os.close(fd)
        if janitor is not None:
            try:
                janitor.wait(timeout=5)
            except subprocess.TimeoutExpired:
                janitor.kill()
                janitor.wait()

    def _copy_snapshot(self, dest: Path) -> Path:
        def copy(src: str, dst: str) -> object:
            self._check_stop()  # a stop request during a long copy is honoured between files
            return shutil.copy2(src, dst)

        try:
            # Symlinks are followed: the snapshot holds the bytes, not links back to editable files.
            shutil.copytree(self.repo, dest, copy_function=copy)
        except shutil.Error as exc:
            raise ServerError(f"cannot snapshot {self.repo}: {exc.args[0][0][2]}") from None
        except OSError as exc:
            raise ServerError(f"cannot snapshot {self.repo} into {dest.parent}: {exc}") from None
        return dest

    def _run_verify(self) -> None:
        assert self.verify is not None
        served = self.served_repository
        try:
            result = self.verify(served)
        except GliodeployError as exc:
            if served == self.repo:
                raise
            # Report the user's paths, not the snapshot's.
            message = str(exc).replace(str(served), str(self.repo))
            try:
                renamed = type(exc)(message)
            except TypeError:
                raise exc from None
            raise renamed from None
        if isinstance(result, Mapping):
            self.load_models = sorted(str(name) for name in result)

    def _ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_stop()
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} "
                    f"while starting on {self.repo}:\n"
                    f"{self.log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise ServerError(
            f"tritonserver not ready after {self.startup_timeout:g} s on {self.repo} (killed):\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server log (kept in memory when :meth:`stop` removed a temporary log)."""
        if self._log_path is None or not self._log_path.is_file():
            return self._final_tail or "(no log)"
        text = self._log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """Stop and clean up; idempotent.

        SIGINT to the server (Triton's graceful shutdown: in-flight requests get ``exit_timeout``
        seconds), then SIGKILL of the process group after ``timeout`` (default ``exit_timeout + 2``);
        then its ``/dev/shm`` regions and the private temporary folder (backends, snapshot, temporary
        log) are removed.
        """
        timeout = self.exit_timeout + 2.0 if timeout is None else timeout
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)  # the server stops its stubs itself
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stubs left behind, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        for region in _SHM_DIR.glob(f"{self.shm_prefix}*") if _SHM_DIR.is_dir() else []:
            with contextlib.suppress(OSError):
                region.unlink()
        if self._tmp is not None:
            if self._user_log is None:
                self._final_tail = self.log_tail(50)
                self._log_path = None
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._served = None
        self._release_janitor()

    def wait(self, poll: float = 0.1) -> int | None:
        """Block until the server exits (its exit code) or :meth:`request_stop` is called (None)."""
        if self.process is None:
            raise ServerError("server not started")
        while not self._stop_requested:
            try:
                return self.process.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                continue
        return None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
