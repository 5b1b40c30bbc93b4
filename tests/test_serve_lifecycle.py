"""Lifecycle of the real `gliodeploy serve` command (bundled Triton): stop, orphans, API scope, snapshot.

Every test runs the real command in a subprocess with its own TMPDIR, finds the tritonserver it spawned in
/proc (pid, process group, /dev/shm prefix, served folder from its command line) and checks that after the
stop nothing is left: no process of the group, free ports, no shared-memory region, an empty TMPDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gliodeploy import contract
from gliodeploy.client.api import GliodeployClient
from gliodeploy.serving.server import ADMIN_HEADER, free_port

pytestmark = pytest.mark.server
STOP_BOUND_S = 10.0  # measured ~2.1-2.5 s on 2 loaded cores; generous for CI
SHAPE = (32, 32, 21)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    http: int
    grpc: int
    tmpdir: Path
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


def start_serve(repo: Path, tmp_path: Path, *args: str) -> Serve:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    http, grpc = free_port(), free_port()
    err = tmp_path / f"serve-{http}.err"
    env = {**os.environ, "TMPDIR": str(tmpdir)}  # everything serve creates lands here: easy to check
    argv = [sys.executable, "-m", "gliodeploy.cli", "serve", str(repo), "--http-port", str(http)]
    with open(err, "wb") as fh:
        proc = subprocess.Popen(
            [*argv, "--grpc-port", str(grpc), *args], stdout=fh, stderr=fh, stdin=subprocess.DEVNULL, env=env
        )
    return Serve(proc, http, grpc, tmpdir, err)


def http_status(port: int, method: str, path: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_ready(s: Serve, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert s.proc.poll() is None, s.err()
        if "serving a verified copy" in s.err():  # serve's own readiness line
            assert http_status(s.http, "GET", "/v2/health/ready") == 200
            return
        time.sleep(0.1)
    raise AssertionError(f"not ready in {timeout} s: {s.err()}")


def proc_state(pid: int) -> str | None:
    """Process state letter from /proc (None when gone); a zombie ('Z') is dead."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


def cmdline(pid: int) -> list[str]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and alive(int(entry.name)):
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return out


@dataclass
class Triton:
    pid: int
    shm_prefix: str
    repository: Path
    argv: list[str]


def find_triton(serve_pid: int, timeout: float = 60, poll: float = 0.01) -> Triton:
    """The tritonserver child of ``serve_pid`` (polls /proc until it appears)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            argv = cmdline(int(entry.name))
            if ppid == serve_pid and argv and argv[0].endswith("/tritonserver"):
                opts = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
                prefix = opts["--backend-config"].split("shm-region-prefix-name=", 1)[1]
                return Triton(int(entry.name), prefix, Path(opts["--model-repository"]), argv)
        time.sleep(poll)
    raise AssertionError(f"no tritonserver child of {serve_pid} within {timeout} s")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a restarted server: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assert_nothing_left(s: Serve, triton: Triton, timeout: float = 15) -> None:
    """No process of the server's group, free ports, no /dev/shm region, an empty TMPDIR (within timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {
            "processes": group_members(triton.pid),
            "ports": [p for p in (s.http, s.grpc) if not port_free(p)],
            "shm": [p.name for p in Path("/dev/shm").glob(f"{triton.shm_prefix}*")],
            "tmp": [p.name for p in s.tmpdir.iterdir()],
        }
        if not any(left.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind after the stop: {left}\n{s.err()}")


def infer(port: int) -> float:
    volume = np.random.default_rng(5).gamma(2.0, 0.8, size=SHAPE).astype(np.float32)
    with GliodeployClient(f"127.0.0.1:{port}", timeout=60, retries=0) as client:
        return client.predict_volume(volume).probability


@pytest.fixture
def repo(tiny_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(tiny_repository, copy)
    return copy


# -- 1 + 3: SIGTERM / SIGINT stop quickly, exit 0, clean everything (the log only kept when asked) -----
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_within_seconds_and_cleans_up(repo: Path, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "logs" / "triton.log" if sig == signal.SIGINT else None
    s = start_serve(repo, tmp_path, *(["--log-file", str(log)] if log else []))
    wait_ready(s)
    triton = find_triton(s.proc.pid)
    assert list(Path("/dev/shm").glob(f"{triton.shm_prefix}*")), "expected live shm regions"
    assert [p.name for p in s.tmpdir.iterdir()], "expected the server's private folder while running"
    t0 = time.monotonic()
    s.proc.send_signal(sig)
    rc = s.proc.wait(timeout=60)
    seconds = time.monotonic() - t0
    print(f"{sig.name}: gliodeploy serve stopped in {seconds:.2f} s")
    assert rc == 0, s.err()
    assert seconds < STOP_BOUND_S, f"stop took {seconds:.1f} s"
    assert f"stopped ({sig.name}) in" in s.err() and "Traceback" not in s.err()
    assert not alive(triton.pid)
    assert_nothing_left(s, triton, timeout=5)
    if log:  # asked for: kept, complete up to the shutdown
        assert log.is_file() and "Started HTTPService" in log.read_text()


# -- 2: no orphan, whatever the timing of the signal -----------------------------------------------
def test_sigterm_during_startup_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    s = start_serve(repo, tmp_path)
    triton = find_triton(s.proc.pid)  # the server was just spawned: models still loading
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(timeout=60)
    assert rc == 0, s.err()
    assert "stopped (SIGTERM) before the server was ready" in s.err() and "Traceback" not in s.err()
    assert_nothing_left(s, triton)


def test_sigkill_of_serve_kills_the_server_and_cleans_up(repo: Path, tmp_path: Path) -> None:
    s = start_serve(repo, tmp_path)
    wait_ready(s)
    triton = find_triton(s.proc.pid)
    assert len(group_members(triton.pid)) >= 2  # tritonserver + python backend stubs
    s.proc.kill()  # no handler, no finally: PR_SET_PDEATHSIG and the janitor must do it all
    s.proc.wait(timeout=10)
    assert_nothing_left(s, triton, timeout=20)


# -- 4 + 5: restricted API by default; a private, verified snapshot is what is served ---------------
def test_default_api_is_inference_only_and_the_snapshot_is_served(repo: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    s = start_serve(repo, tmp_path)
    try:
        wait_ready(s)
        triton = find_triton(s.proc.pid)
        before = infer(s.http)  # the client reads health, metadata and configuration: all allowed
        for method, path in [
            ("POST", "/v2/repository/index"),
            ("POST", f"/v2/repository/models/{contract.NATIVE_PIPELINE_MODEL}/unload"),
            ("POST", f"/v2/repository/models/{contract.ENSEMBLE_MODEL}/load"),
            ("GET", "/v2/systemsharedmemory/status"),
            ("POST", "/v2/systemsharedmemory/region/x/register"),
            ("GET", "/v2/models/stats"),
            ("GET", "/v2/logging"),
        ]:
            assert http_status(s.http, method, path, b"{}" if method == "POST" else None) == 403, path
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc}")
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.unload_model(contract.ENSEMBLE_MODEL)
        assert grpc.get_model_config(contract.ENSEMBLE_MODEL).config.name == contract.ENSEMBLE_MODEL
        assert ADMIN_HEADER in " ".join(triton.argv)

        # Served: a verified private copy (0700), loaded explicitly, not the user's folder.
        assert triton.repository != repo.resolve() and s.tmpdir in triton.repository.parents
        assert stat.S_IMODE(triton.repository.parent.stat().st_mode) == 0o700
        assert "--model-control-mode=explicit" in triton.argv
        assert "--load-model=*" not in triton.argv
        # Editing the original after start changes nothing served; the server never writes into it.
        (repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx").write_bytes(b"not an onnx model")
        assert infer(s.http) == before
        assert not list(repo.rglob("__pycache__"))
    finally:
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=60)
    assert_nothing_left(s, triton)


def test_allow_admin_api_opens_model_control_on_the_snapshot(repo: Path, tmp_path: Path) -> None:
    s = start_serve(repo, tmp_path, "--allow-admin-api")
    try:
        wait_ready(s)
        triton = find_triton(s.proc.pid)
        assert "warning: --allow-admin-api" in s.err()
        before = infer(s.http)
        # Tamper with the original, then make Triton re-read its model: it reloads the verified copy.
        (repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx").write_bytes(b"not an onnx model")
        (repo / contract.ENSEMBLE_MODEL / "1" / "model.py").write_text("raise SystemExit('tampered')\n")
        assert http_status(s.http, "POST", "/v2/repository/index", b"{}") == 200
        assert http_status(s.http, "GET", "/v2/systemsharedmemory/status") == 200
        for action in ("unload", "load"):
            path = f"/v2/repository/models/{contract.ENSEMBLE_MODEL}/{action}"
            assert http_status(s.http, "POST", path, b"{}") == 200, action
        assert http_status(s.http, "GET", f"/v2/models/{contract.ENSEMBLE_MODEL}/ready") == 200
        assert infer(s.http) == before
    finally:
        s.proc.send_signal(signal.SIGINT)
        s.proc.wait(timeout=60)
    assert s.proc.returncode == 0, s.err()
    assert_nothing_left(s, triton)


@pytest.mark.parametrize("target", ["model.onnx", "metadata.json"])
def test_tampered_repository_is_refused_before_anything_listens(
    repo: Path, tmp_path: Path, target: str
) -> None:
    path = repo / contract.ENSEMBLE_MODEL / "1" / target
    if target == "metadata.json":
        meta = json.loads(path.read_text())
        meta["threshold"] = 0.01
        path.write_text(json.dumps(meta))
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    s = start_serve(repo, tmp_path)
    rc = s.proc.wait(timeout=120)
    err = s.err()
    assert rc != 0 and "Traceback" not in err, err
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert target in line and str(repo) in line  # the user's path, not the snapshot's
    assert port_free(s.http) and port_free(s.grpc)
    assert not list(s.tmpdir.iterdir())  # the snapshot is gone


def test_failed_start_prints_the_log_tail_then_cleans_up(repo: Path, tmp_path: Path) -> None:
    """`cpu` configurations name the onnxruntime backend, absent from the bundled binary: Triton exits."""
    s = start_serve(repo, tmp_path, "--config-name", "cpu", "--startup-timeout", "60")
    rc = s.proc.wait(timeout=120)
    err = s.err()
    assert rc == 5 and "Traceback" not in err, err
    assert "error: tritonserver exited with code" in err and "onnxruntime" in err  # the log tail
    assert port_free(s.http) and port_free(s.grpc)
    assert not [p for p in s.tmpdir.iterdir() if p.name.startswith("gliodeploy-triton-")]
