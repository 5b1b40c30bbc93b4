"""Reliability of the real bundled Triton server: concurrent load, a server killed mid-batch, security.

Load: 8 client threads x 5 requests (loopback) must all succeed with the single-request result, and the
server's memory (VmRSS of its process group, from /proc) must not keep growing after warm-up.
Faults: SIGKILL of a dedicated server while `gliodeploy-client predict` runs: the client exits non-zero
with a clear message and never leaves a torn output file; a server restarted on the same ports serves
a rerun. Security: loopback binding by default; `gliodeploy serve` refuses a tampered repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from badinputs import good_dicom

from gliodeploy import contract
from gliodeploy.client.api import GliodeployClient
from gliodeploy.serving import TritonServer

pytestmark = pytest.mark.server
CLIENT = [sys.executable, "-m", "gliodeploy.client.cli"]
THREADS, REQUESTS = 8, 5
# 127.0.0.1 in /proc/net/tcp (little-endian hex) and as ::ffff:127.0.0.1 in /proc/net/tcp6.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}
RSS_GROWTH_BOUND_KIB = 64 * 1024  # 64 MiB over 40 requests would be a leak of > 1.6 MiB per request


def group_rss_kib(pgid: int) -> int:
    """Sum of VmRSS (KiB) of every process in process group ``pgid`` (tritonserver + backend stubs)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue  # a process that ended while we looked
    return total


@pytest.fixture(scope="module")
def volumes() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.gamma(2.0, 0.8, size=(32, 32, 21)).astype(np.float32) for _ in range(THREADS)]


def test_concurrent_load_is_exact_and_does_not_leak(triton_server, volumes: list[np.ndarray]) -> None:
    with GliodeployClient(triton_server.http_url, timeout=60) as client:
        expected = [client.predict_volume(v).probability for v in volumes]

    def worker(i: int) -> list[float]:
        with GliodeployClient(triton_server.http_url, timeout=60, retries=0) as client:
            return [client.predict_volume(volumes[i]).probability for _ in range(REQUESTS)]

    def round_() -> tuple[list[list[float]], float]:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            results = list(pool.map(worker, range(THREADS)))
        return results, time.monotonic() - t0

    pgid = triton_server.process.pid
    warm, _ = round_()
    rss_warm = group_rss_kib(pgid)
    for _ in range(2):
        later, seconds = round_()
    rss_later = group_rss_kib(pgid)
    for results in (warm, later):
        for i, probs in enumerate(results):
            np.testing.assert_allclose(probs, [expected[i]] * REQUESTS, atol=1e-6, rtol=0)
    assert seconds < 120, f"{THREADS * REQUESTS} requests took {seconds:.1f} s"
    assert rss_warm > 0
    growth = rss_later - rss_warm
    assert growth < RSS_GROWTH_BOUND_KIB, f"server RSS grew {growth} KiB ({rss_warm} -> {rss_later})"


def test_server_listens_on_loopback_only(triton_server) -> None:
    """Default binding: every listening socket of the server is 127.0.0.1 (checked in /proc/net/tcp)."""
    ports = {triton_server.http_port, triton_server.grpc_port}
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port, 16) in ports:  # 0A = LISTEN
                listening.setdefault(int(port, 16), []).append(address)
    assert set(listening) == ports, listening
    for addrs in listening.values():
        assert all(a in LOOPBACK for a in addrs), addrs  # never 0.0.0.0 / ::
    cmdline = Path(f"/proc/{triton_server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--http-address=127.0.0.1" in cmdline and b"--grpc-address=127.0.0.1" in cmdline


def test_serve_refuses_a_tampered_repository(tiny_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    onnx = repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    onnx.write_bytes(bytes(data))
    port = 18000 + os.getpid() % 1000
    proc = subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", "serve", str(repo), "--http-port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: " in proc.stderr and "model.onnx" in proc.stderr


def test_server_killed_mid_batch_then_restarted(tiny_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    scans = [good_dicom(tmp_path / f"scan{i}", seed=i) for i in range(6)]
    out = tmp_path / "results" / "out.json"
    out.parent.mkdir()
    server = TritonServer(repo, startup_timeout=90).start()
    ports = (server.http_port, server.grpc_port)
    try:
        argv = [*CLIENT, "predict", *map(str, scans), "--url", server.http_url, "--json", "-o", str(out)]
        client = subprocess.Popen(
            [*argv, "--retries", "0", "-j", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        # Kill once the server has answered at least one scan of the batch: mid-batch, for real.
        import tritonclient.http as httpclient

        probe = httpclient.InferenceServerClient(server.http_url)
        while time.monotonic() < deadline and client.poll() is None:
            stats = probe.get_inference_statistics(contract.ENSEMBLE_MODEL)["model_stats"]
            if sum(int(s["inference_count"]) for s in stats) >= 1:
                break
            time.sleep(0.05)
        os.killpg(server.process.pid, signal.SIGKILL)
        _, stderr = client.communicate(timeout=180)
    finally:
        server.stop()
    assert client.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "error: " in stderr and ("server" in stderr or "connect" in stderr), stderr
    leftovers = [p.name for p in out.parent.iterdir() if p.name != "out.json"]
    assert not leftovers, leftovers  # no temporary file left behind
    if out.exists():  # a complete document that reports the failed scans, never a torn file
        doc = json.loads(out.read_text())
        assert doc["n_failed"] >= 1 and doc["n_ok"] + doc["n_failed"] == len(scans)
        out.unlink()

    # Same ports, restarted server: the rerun (with retries) succeeds completely.
    with TritonServer(repo, http_port=ports[0], grpc_port=ports[1], startup_timeout=90) as again:
        proc = subprocess.run([*argv, "--retries", "3"], capture_output=True, text=True, timeout=300)
        assert again.http_url == server.http_url
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["n_ok"], doc["n_failed"]) == (len(scans), 0)
