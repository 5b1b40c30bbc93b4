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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gliodeploy.errors import ServerError

_SHM_DIR = Path("/dev/shm")


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


class TritonServer:
    """The bundled Triton server serving ``repo``, as a context manager.

    >>> with TritonServer("model_repository") as server:   # doctest: +SKIP
    ...     print(server.http_url, server.grpc_url)

    Ports default to free loopback ports; ``host`` defaults to loopback (nothing listens on the
    network unless asked). ``model_config_name`` selects ``configs/<name>.pbtxt`` in each model
    folder (``local`` = python backend, the only kind this binary can run).
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
    ) -> None:
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise ServerError(f"model repository not found: {self.repo}")
        self.host = host
        self.http_port = http_port or free_port(_url_host(host))
        self.grpc_port = grpc_port or free_port(_url_host(host))
        self.metrics_port = free_port(_url_host(host)) if metrics else None
        self.model_config_name = model_config_name
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self._log_path = Path(log_file) if log_file else None
        self._tmp: Path | None = None
        self._log_fh = None
        self.process: subprocess.Popen[bytes] | None = None
        # Unique shared-memory prefix: cleanup removes exactly this server's regions.
        self.shm_prefix = f"triton_python_backend_shm_region_gliodeploy_{uuid.uuid4().hex[:12]}_"

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
        """File receiving the server's stdout/stderr."""
        return self._log_path

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
        return env

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        """The ``tritonserver`` command line."""
        cmd = [
            str(install.binary),
            f"--model-repository={self.repo}",
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
            f"--log-verbose={1 if self.verbose else 0}",
        ]
        if self.metrics_port:
            cmd += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        return cmd

    def start(self) -> TritonServer:
        """Start the server and wait until ``/v2/health/ready``; ServerError (with the log tail) otherwise."""
        if self.process is not None:
            raise ServerError("server already started")
        install = find_tritonserver()
        self._tmp = Path(tempfile.mkdtemp(prefix="gliodeploy-triton-"))
        if self._log_path is None:
            self._log_path = self._tmp / "tritonserver.log"
        self._log_fh = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        backends = self._backend_dir(install, self._tmp)
        try:
            self.process = subprocess.Popen(
                self.command(install, backends),
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(install),
                start_new_session=True,  # own process group: stubs die with the server
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

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
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} "
                    f"while starting on {self.repo}:\n"
                    f"{self.log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.2)
        raise ServerError(
            f"tritonserver not ready after {self.startup_timeout:g} s on {self.repo} (killed):\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server log."""
        if self._log_path is None or not self._log_path.is_file():
            return "(no log)"
        text = self._log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (Triton's graceful shutdown), then SIGKILL of the process group; clean /dev/shm."""
        proc, self.process = self.process, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            with contextlib.suppress(ProcessLookupError):
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
            keep_log = self._log_path is not None and self._tmp in self._log_path.parents
            if not keep_log:
                shutil.rmtree(self._tmp, ignore_errors=True)
            else:  # keep the log readable after stop(); drop the rest
                shutil.rmtree(self._tmp / "backends", ignore_errors=True)

    def wait(self) -> int:
        """Block until the server exits (``gliodeploy serve``); returns its exit code."""
        if self.process is None:
            raise ServerError("server not started")
        return self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
