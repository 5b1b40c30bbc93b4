"""Request compression (``--compression``) against the REAL bundled Triton server, HTTP and gRPC: the same
probabilities as without it, and fewer bytes on the wire, counted by a loopback relay between the
client and the server (bench/wire.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gliodeploy.client.api import GliodeployClient
from gliodeploy.client.transport import Endpoint, Transport
from gliodeploy.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from wire import CountingProxy  # noqa: E402


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic NIfTI scan (Bq/mL + sidecar): its brain-masked grid is mostly zeros."""
    from gliodeploy.synth import generate_cohort

    manifest = Path(
        generate_cohort(
            tmp_path_factory.mktemp("cmp"), n=4, seed=8, size="tiny", test_fraction=0.0, progress=False
        )
    )
    with open(manifest, newline="") as fh:
        return (manifest.parent / next(csv.DictReader(fh))["image"]).resolve()


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit(":", 1)
    return host, int(port)


def _measure(url: str, protocol: str, compression: str, scan: Path, **kw: object) -> tuple[list[float], int]:
    """Fold probabilities and bytes sent by the client for one prediction through a counting relay."""
    with CountingProxy(*_host_port(url)) as proxy:
        with GliodeployClient(
            proxy.address, protocol=protocol, compression=compression, timeout=60
        ) as client:
            client.info()  # metadata and config requests are not what is measured
            proxy.reset()
            pred = client.predict_file(scan, **kw)
        return [pred.probability, *pred.fold_probs], proxy.counts()[0]


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_compression_same_answer_fewer_bytes(
    request: pytest.FixtureRequest, protocol: str, scan: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    url = server.http_url if protocol == "http" else server.grpc_url
    plain, plain_bytes = _measure(url, protocol, "none", scan)
    grid_bytes = int(np.prod(GliodeployClient(url, protocol=protocol).info().grid_shape)) * 4
    assert plain_bytes > grid_bytes  # the relay sees the whole uncompressed tensor
    for algorithm in ("gzip", "deflate"):
        got, sent = _measure(url, protocol, algorithm, scan)
        assert got == plain, algorithm  # the server decompresses to the very same float32 bytes
        assert sent < plain_bytes / 2, (algorithm, sent, plain_bytes)


@pytest.mark.server
def test_compression_with_server_preprocessing(request: pytest.FixtureRequest, scan: Path) -> None:
    server = request.getfixturevalue("triton_server")
    plain, plain_bytes = _measure(server.http_url, "http", "none", scan, server_preprocess=True)
    got, sent = _measure(server.http_url, "http", "gzip", scan, server_preprocess=True)
    assert got == plain and sent < plain_bytes


@pytest.mark.server
def test_cli_compression_option(request: pytest.FixtureRequest, scan: Path) -> None:
    server = request.getfixturevalue("triton_server")
    code = "import sys; sys.argv = ['x', *sys.argv[1:]]; from gliodeploy.client.cli import main; main()"
    args = [sys.executable, "-c", code, "predict", str(scan), "--url", server.grpc_url, "--protocol", "grpc"]
    plain = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    gz = subprocess.run(
        [*args, "--json", "--compression", "gzip"], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == gz.returncode == 0, gz.stderr
    p, g = (json.loads(x.stdout)["results"][0]["probability"] for x in (plain, gz))
    assert p == g
    bad = subprocess.run([*args, "--compression", "brotli"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "brotli" in bad.stderr and "Traceback" not in bad.stderr


def test_unknown_compression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="compression must be one of none, gzip, deflate"):
        GliodeployClient("localhost:8000", compression="brotli")


def test_headers_are_not_mutated_by_compressed_calls() -> None:
    """tritonclient's HTTP infer adds Content-Encoding to the headers dict it gets: each call gets a copy."""
    transport = Transport(Endpoint("127.0.0.1:9", headers={"X-Site": "a"}, compression="gzip"))
    kw = transport._kw()
    kw["headers"]["Content-Encoding"] = "gzip"
    assert transport._kw()["headers"] == {"X-Site": "a"}
    assert Transport(Endpoint("127.0.0.1:9"))._kw()["headers"] is None
