"""Conventions shared by both programs: --version vs --model-version, credentials kept out of argv and
off plain HTTP, environment variables, and --verbose/--log-file logging (issue 16)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gliodeploy import __version__
from gliodeploy.cli import app as main_app
from gliodeploy.cli_utils import LOGGER_NAME, OLD_VERSION_HINT, run_app
from gliodeploy.client.cli import app as client_app
from gliodeploy.client.credentials import check_credential_transport, is_loopback, with_token
from gliodeploy.client.transport import Endpoint


@dataclass
class Run:
    """What a user sees: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


def _run(app: typer.Typer, *args: str, env: Mapping[str, str | None] | None = None) -> Run:
    """Run ``app`` in-process through the console-script path (run_app: ``error: ...`` and exit codes)."""
    env = {"GLIODEPLOY_TOKEN": None, "GLIODEPLOY_URL": None, "GLIODEPLOY_PROTOCOL": None, **(env or {})}
    with CliRunner().isolation(env=env) as (out, err, _):
        try:
            run_app(app, list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic NIfTI scan on the tiny grid (with its BIDS-PET sidecar)."""
    from gliodeploy.synth import generate_cohort

    manifest = generate_cohort(
        tmp_path_factory.mktemp("cohort"), n=4, seed=3, size="tiny", test_fraction=0, progress=False
    )
    return Path(manifest).parent / "sub-001" / "pet" / "sub-001_pet.nii.gz"


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 to every KServe health request and records the headers it received."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    """A tiny HTTP server on loopback that records request headers (``.seen``)."""
    yield from _serve("127.0.0.1")


def _serve(host: str) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((host, 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: ThreadingHTTPServer, host: str = "127.0.0.1") -> str:
    return f"{host}:{server.server_address[1]}"


# ---- 1. --version is the program's; --model-version the model's -------------------------------------
@pytest.mark.parametrize(("app", "prog"), [(main_app, "gliodeploy"), (client_app, "gliodeploy-client")])
def test_root_version_prints_the_program_version(app: typer.Typer, prog: str) -> None:
    run = _run(app, "--version")
    assert (run.code, run.out) == (0, f"{prog} {__version__}\n")


@pytest.mark.parametrize(
    ("app", "args"),
    [
        (client_app, ["predict", "scan.nii.gz", "--version", "2"]),
        (client_app, ["health", "--version", "2"]),
        (client_app, ["info", "--version", "2", "--url", "example.org:1"]),
        (main_app, ["predict", "repo", "scan.nii.gz", "--version", "2"]),
    ],
    ids=["client-predict", "client-health", "client-info", "offline-predict"],
)
def test_old_version_spelling_gives_the_hint(app: typer.Typer, args: list[str]) -> None:
    run = _run(app, *args)
    assert run.code == 2 and run.err == f"error: {OLD_VERSION_HINT}\n", run.err
    assert "Traceback" not in run.err


def test_model_version_selects_the_model_version(request: pytest.FixtureRequest, scan: Path) -> None:
    server = request.getfixturevalue("triton_server")
    url = server.http_url
    info = _run(client_app, "info", "--url", url, "--model-version", "1", "--json")
    assert info.code == 0, info.err
    assert json.loads(info.out)["version"] == "1"
    health = _run(client_app, "health", "--url", url, "--model-version", "1", "--json")
    assert health.code == 0 and json.loads(health.out)["model_version"] == "1"
    pred = _run(client_app, "predict", str(scan), "--url", url, "--model-version", "1", "--json")
    assert pred.code == 0, pred.err
    assert json.loads(pred.out)["results"][0]["model_version"] == "1"
    missing = _run(client_app, "info", "--url", url, "--model-version", "999", "--retries", "0")
    assert missing.code == 8 and missing.err.startswith("error: ") and "999" in missing.err


# ---- 2. environment variables and credentials --------------------------------------------------------
def test_environment_url_and_protocol_reach_the_server(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("triton_server")
    http = _run(client_app, "health", "--json", env={"GLIODEPLOY_URL": server.http_url})
    assert http.code == 0, http.err
    assert json.loads(http.out)["url"] == server.http_url.split("://")[-1]
    grpc = _run(
        client_app,
        "info",
        "--json",
        # the token header is valid gRPC metadata (lower-case key); Triton does not check it
        env={"GLIODEPLOY_URL": server.grpc_url, "GLIODEPLOY_PROTOCOL": "grpc", "GLIODEPLOY_TOKEN": "t"},
    )
    assert grpc.code == 0 and json.loads(grpc.out)["version"] == "1", grpc.err
    assert grpc.err.startswith("warning: sending credentials (authorization) without TLS over plain grpc")
    shown = CliRunner().invoke(client_app, ["predict", "--help"], terminal_width=200).output
    assert "GLIODEPLOY_URL" in shown and "GLIODEPLOY_PROTOCOL" in shown and "GLIODEPLOY_TOKEN" in shown


def test_environment_token_is_sent_as_bearer(recorder: ThreadingHTTPServer) -> None:
    run = _run(client_app, "health", "--url", _url(recorder), env={"GLIODEPLOY_TOKEN": "s3cret-token"})
    assert run.code == 0, run.err
    assert recorder.seen and all(h["authorization"] == "Bearer s3cret-token" for h in recorder.seen)
    # loopback: sent, with a warning that it went without TLS
    assert run.err.startswith("warning: sending credentials (authorization) without TLS"), run.err
    assert "s3cret-token" not in run.err + run.out


def test_token_file_permissions(recorder: ThreadingHTTPServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file-token\n")
    token.chmod(0o644)
    open_file = _run(client_app, "health", "--url", _url(recorder), "--token-file", str(token))
    assert open_file.code == 2 and not recorder.seen
    assert open_file.err == (
        f"error: --token-file {token}: group or others may access it (mode 0644); "
        f"make it private with: chmod 600 {token}\n"
    )
    token.chmod(0o600)
    env = {"GLIODEPLOY_TOKEN": "env-token"}  # the explicit file wins over the ambient variable
    ok = _run(client_app, "health", "--url", _url(recorder), "--token-file", str(token), env=env)
    assert ok.code == 0, ok.err
    assert recorder.seen[-1]["authorization"] == "Bearer from-file-token"

    token.write_text("Bearer abc\n")
    bad = _run(client_app, "health", "--url", _url(recorder), "--token-file", str(token))
    assert bad.code == 2 and "without 'Bearer '" in bad.err
    missing = _run(client_app, "health", "--url", _url(recorder), "--token-file", str(tmp_path / "nope"))
    assert missing.code == 2 and missing.err.startswith("error: ") and "no such file" in missing.err
    both = _run(client_app, "health", "--url", _url(recorder), "-H", "Authorization: Basic x", env=env)
    assert both.code == 2 and "keep one" in both.err


def test_credentials_refused_over_plain_http_to_a_remote_host(recorder: ThreadingHTTPServer) -> None:
    remote = "192.0.2.10:8000"  # TEST-NET-1: never contacted, the refusal comes first
    for extra, env in (
        (["-H", "Authorization: Bearer x"], {}),
        (["-H", "Cookie: session=1"], {}),
        (["-H", "X-API-Key: 1"], {}),
        ([], {"GLIODEPLOY_TOKEN": "t"}),
    ):
        run = _run(client_app, "health", "--url", remote, *extra, env=env)
        assert run.code == 2, run.err
        assert run.err.startswith(
            "error: refusing to send credentials ("
        ) and "--allow-insecure-credentials" in (run.err)
    # without credentials there is nothing to protect: it tries to connect (and fails: exit 5 or 6)
    plain = _run(
        client_app, "health", "--url", remote, "-H", "X-Trace: 1", "--timeout", "0.2", "--retries", "0"
    )
    assert plain.code in (5, 6) and "refusing" not in plain.err


def test_allow_insecure_credentials_sends_with_a_warning() -> None:
    """A host name that is not a loopback literal, served locally: refused, then sent with a warning."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
        servers = _serve(address)
        server = next(servers)
    except OSError as exc:
        pytest.skip(f"this machine's name {name!r} cannot be served here ({exc})")
    try:
        url = _url(server, name)
        refused = _run(client_app, "health", "--url", url, env={"GLIODEPLOY_TOKEN": "t0k"})
        assert refused.code == 2 and "refusing" in refused.err and not server.seen  # type: ignore[attr-defined]
        run = _run(
            client_app,
            "health",
            "--url",
            url,
            "--allow-insecure-credentials",
            env={"GLIODEPLOY_TOKEN": "t0k"},
        )
        assert run.code == 0, run.err
        assert run.err.startswith("warning: sending credentials (authorization) without TLS")
        assert server.seen[0]["authorization"] == "Bearer t0k"  # type: ignore[attr-defined]
    finally:
        next(servers, None)


def test_credential_transport_rules() -> None:
    headers = with_token({"X-Trace": "1"}, "tok")
    assert headers == {"X-Trace": "1", "authorization": "Bearer tok"}
    assert check_credential_transport(Endpoint("10.0.0.5:8000", ssl=True, headers=headers)) is None
    assert check_credential_transport(Endpoint("10.0.0.5:8000", headers={"X-Trace": "1"})) is None
    assert "loopback" in (check_credential_transport(Endpoint("[::1]:8000", headers=headers)) or "")
    for host in ("localhost:8000", "127.0.0.2:1", "[::1]:8001", "LOCALHOST.:8000"):
        assert is_loopback(host), host
    for host in ("10.0.0.5:8000", "example.org:443", "127.example.org:80", "[2001:db8::1]:8000"):
        assert not is_loopback(host), host


# ---- 3. logging ------------------------------------------------------------------------------------
def test_log_file_records_a_real_prediction(
    request: pytest.FixtureRequest, scan: Path, tmp_path: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    plain = _run(client_app, "predict", str(scan), "--url", server.http_url)
    log_file = tmp_path / "client.log"
    logged = _run(client_app, "--log-file", str(log_file), "predict", str(scan), "--url", server.http_url)
    assert logged.code == plain.code == 0, logged.err
    assert logged.out == plain.out and logged.err == plain.err  # the log goes to the file, nowhere else
    text = log_file.read_text()
    assert " DEBUG gliodeploy.client.transport: http://" in text and "inference took" in text
    assert " DEBUG gliodeploy.preprocessing.pipeline: preprocessed onto 32x32x21 voxels" in text
    assert " INFO gliodeploy.client.api: model gliodeploy_ensemble version 1 on http://" in text
    assert f" INFO gliodeploy.client.api: {scan}: P(recurrence)=" in text
    assert not logging.getLogger(LOGGER_NAME).handlers  # closed with the run

    verbose = _run(client_app, "-v", "info", "--url", server.http_url)
    assert verbose.code == 0 and " INFO gliodeploy.client.api: model gliodeploy_ensemble" in verbose.err
    assert " DEBUG " not in verbose.err
    very = _run(client_app, "-vv", "health", "--url", server.http_url)
    assert very.code == 0 and " DEBUG gliodeploy.client.transport: " in very.err


def test_offline_predict_log_file(tiny_repository: Path, scan: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "offline.log"
    run = _run(main_app, "--log-file", str(log_file), "predict", str(tiny_repository), str(scan), "-q")
    assert run.code == 0, run.err
    assert " DEBUG gliodeploy.preprocessing.pipeline: preprocessed onto" in log_file.read_text()


def test_unwritable_log_file_is_one_error_line(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "x.log"
    run = _run(client_app, "--log-file", str(target), "health", "--url", "127.0.0.1:1")
    assert run.code == 2 and run.err.startswith(f"error: --log-file {target}: cannot write it")
    assert len(run.err.splitlines()) == 1 and not os.path.exists(target)


def test_retries_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from gliodeploy.client.errors import TransientServerError
    from gliodeploy.client.retry import call_with_retries

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise TransientServerError("server temporarily unavailable (503)")
        return "ok"

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        assert call_with_retries(flaky, retries=2, sleep=lambda _s: None) == "ok"
    assert [r.name for r in caplog.records] == ["gliodeploy.client.retry"]
    assert "attempt 1/3 failed (server temporarily unavailable (503)); retrying in" in caplog.text
