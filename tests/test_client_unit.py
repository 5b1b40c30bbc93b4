"""Client pieces that need no server: validation, discovery, retries, error mapping, output, CLI errors."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from gliodeploy import contract
from gliodeploy.cli_utils import run_app
from gliodeploy.client import errors as cerr
from gliodeploy.client.api import GliodeployClient, Prediction, ScanFailure, parse_model_info
from gliodeploy.client.cli import app, batch_exit_code, parse_headers
from gliodeploy.client.discovery import discover_scans
from gliodeploy.client.output import human_line, to_csv, to_json
from gliodeploy.client.retry import backoff_delays, call_with_retries
from gliodeploy.client.transport import classify, parse_url
from gliodeploy.client.validation import check_grid_array, check_native_image
from gliodeploy.errors import ConfigError, InputError, ServerError

GRID = (8, 8, 6)
PRE = {"spacing": [32.0, 32.0, 32.0], "shape": list(GRID), "normalization": "minmax"}


def _meta(shape=(-1, 1, *GRID), folds=3, datatype="FP32") -> dict:
    return {
        "name": contract.ENSEMBLE_MODEL,
        "versions": ["1", "2"],
        "platform": "python",
        "inputs": [{"name": contract.INPUT_SUV, "datatype": datatype, "shape": list(shape)}],
        "outputs": [
            {"name": contract.OUTPUT_PROBABILITY, "datatype": "FP32", "shape": [-1, 1]},
            {"name": contract.OUTPUT_FOLD_PROBABILITIES, "datatype": "FP32", "shape": [-1, folds]},
            {"name": contract.OUTPUT_LOGIT, "datatype": "FP32", "shape": [-1, 1]},
        ],
    }


def _config(threshold="0.42", pre=PRE) -> dict:
    return {
        "parameters": {
            "gliodeploy_threshold": {"string_value": threshold},
            "gliodeploy_preprocessing": {"string_value": json.dumps(pre)},
        }
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- validation ---------------------------------------------------------------------------------
def _image(arr: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    return img


def test_native_image_checks_name_the_problem() -> None:
    rng = np.random.default_rng(0)
    good = rng.random((6, 7, 8))
    check_native_image(_image(good), "scan")
    bad = good.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="1 voxel.*NaN"):
        check_native_image(_image(bad), "scan")
    with pytest.raises(InputError, match="constant"):
        check_native_image(_image(np.ones((6, 7, 8))), "scan")
    with pytest.raises(InputError, match="implausible voxel spacing"):
        check_native_image(_image(good, spacing=(2000.0, 2.0, 2.0)), "scan")
    four_d = sitk.JoinSeries([_image(good), _image(good)])
    with pytest.raises(InputError, match="4D"):
        check_native_image(four_d, "scan")


def test_grid_array_checks_shape_and_squeezes_batch() -> None:
    arr = np.random.default_rng(0).random(GRID)
    out = check_grid_array(arr[None, None].astype(np.float64), GRID, "v")
    assert out.dtype == np.float32 and out.shape == GRID and out.flags.c_contiguous
    with pytest.raises(InputError, match=r"does not match the model grid \(8, 8, 6\)"):
        check_grid_array(np.zeros((8, 8, 5)) + arr[..., :5], GRID, "v")
    with pytest.raises(InputError, match="3D"):
        check_grid_array(arr[0], GRID, "v")
    with pytest.raises(InputError, match="infinite"):
        check_grid_array(np.where(arr > 0.5, np.inf, arr), GRID, "v")
    with pytest.raises(InputError, match="empty"):
        check_grid_array(np.zeros((0, 8, 6)), (0, 8, 6), "v")


# -- discovery ----------------------------------------------------------------------------------
def test_discovery_finds_nifti_and_dicom_series(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "s1.nii.gz").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("ignore me")
    series = tmp_path / "b" / "series1"
    series.mkdir(parents=True)
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"rest")  # no extension, DICM magic
    (tmp_path / "c.nii").write_bytes(b"x")
    found = discover_scans([tmp_path, tmp_path / "c.nii"])  # c.nii twice: listed once
    assert found == [tmp_path / "a" / "s1.nii.gz", series, tmp_path / "c.nii"]
    assert discover_scans([series]) == [series]
    with pytest.raises(InputError, match="no such file"):
        discover_scans([tmp_path / "missing.nii"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI file"):
        discover_scans([tmp_path / "empty"])


# -- retries and error mapping ------------------------------------------------------------------
class Flaky:
    """Fails with ``exc`` the first ``n`` calls, then returns 'ok'."""

    def __init__(self, exc: BaseException, n: int) -> None:
        self.exc, self.n, self.calls = exc, n, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.n:
            raise self.exc
        return "ok"


def test_retries_transient_errors_with_exponential_backoff() -> None:
    sleeps: list[float] = []
    fn = Flaky(cerr.TransientServerError("503"), 3)
    assert call_with_retries(fn, retries=3, base_delay=0.1, sleep=sleeps.append, jitter=False) == "ok"
    assert fn.calls == 4 and sleeps == [0.1, 0.2, 0.4]
    assert backoff_delays(6, 1.0, 5.0) == [1, 2, 4, 5, 5, 5]
    fn = Flaky(cerr.TransientServerError("503"), 5)
    with pytest.raises(cerr.TransientServerError):
        call_with_retries(fn, retries=2, sleep=sleeps.append)
    assert fn.calls == 3


@pytest.mark.parametrize(
    "exc",
    [
        InputError("bad volume"),
        ServerError("400 invalid input"),
        cerr.ModelNotReadyError("x"),
        ValueError("bug"),
    ],
)
def test_never_retries_permanent_errors(exc: BaseException) -> None:
    fn = Flaky(exc, 1)
    with pytest.raises(type(exc)):
        call_with_retries(fn, retries=5, sleep=lambda _s: pytest.fail("must not sleep"))
    assert fn.calls == 1


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (ConnectionRefusedError(111, "Connection refused"), cerr.ServerUnavailableError),
        (ConnectionResetError(104, "reset"), cerr.TransientServerError),
        (TimeoutError("timed out"), cerr.ServerTimeoutError),
        (InferenceServerException("busy", status="503"), cerr.TransientServerError),
        (InferenceServerException("x", status="StatusCode.UNAVAILABLE"), cerr.TransientServerError),
        (InferenceServerException("late", status="StatusCode.DEADLINE_EXCEEDED"), cerr.ServerTimeoutError),
        (
            InferenceServerException("Request for unknown model: 'm' is not found", status="400"),
            cerr.ModelNotReadyError,
        ),
        (
            InferenceServerException("Request for unknown model: 'm' version 9 is not found", status="400"),
            cerr.ModelVersionError,
        ),
        (InferenceServerException("unexpected shape for input 'suv'", status="400"), ServerError),
    ],
)
def test_classify_maps_each_failure_to_its_class(exc: BaseException, cls: type) -> None:
    out = classify(exc, what="inference", model="m", version="9" if "version" in str(exc) else "")
    assert type(out) is cls
    # only transient failures are retryable; 4xx stays a plain ServerError (never retried)
    assert isinstance(out, cerr.ServerUnavailableError) == (
        cls in (cerr.ServerUnavailableError, cerr.TransientServerError)
    )


def test_exit_codes_are_distinct() -> None:
    codes = [
        c.exit_code
        for c in (
            cerr.ServerUnavailableError,
            cerr.ServerTimeoutError,
            cerr.ModelNotReadyError,
            cerr.ModelVersionError,
            cerr.InvalidResponseError,
        )
    ]
    assert len(set(codes)) == len(codes) and cerr.EXIT_SOME_FAILED not in codes and 2 not in codes


def test_parse_url_and_headers() -> None:
    assert parse_url("https://triton.example:9000/", "http") == ("triton.example:9000", True)
    assert parse_url("localhost", "grpc") == ("localhost:8001", False)
    with pytest.raises(InputError, match="scheme"):
        parse_url("ftp://x", "http")
    with pytest.raises(InputError, match="protocol"):
        parse_url("x", "websocket")
    assert parse_headers(["Authorization: Bearer a:b"]) == {"Authorization": "Bearer a:b"}
    with pytest.raises(InputError, match="Name: value"):
        parse_headers(["no colon"])


# -- model info and a client on a fake transport -------------------------------------------------
def test_parse_model_info_reads_threshold_and_preprocessing() -> None:
    info = parse_model_info(_meta(), _config(), {"name": "triton", "version": "2.51.0"})
    assert info.threshold == pytest.approx(0.42) and info.grid_shape == GRID and info.folds == 3
    assert info.version == "2" and info.preprocessing["shape"] == list(GRID)
    with pytest.raises(cerr.InvalidResponseError, match="gliodeploy_threshold"):
        parse_model_info(_meta(), {"parameters": {}}, {})
    with pytest.raises(cerr.InvalidResponseError, match="does not match the input shape"):
        parse_model_info(_meta(shape=(-1, 1, 9, 9, 9)), _config(), {})
    with pytest.raises(cerr.InvalidResponseError, match=r"not in \(0, 1\)"):
        parse_model_info(_meta(), _config(threshold="1.5"), {})


class FakeTransport:
    """Answers like a gliodeploy ensemble: fold probabilities = sigmoid of fixed voxel sums."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first, self.calls, self.sent = fail_first, 0, []

    def model_metadata(self, model, version=""):
        return _meta(datatype="FP32")

    def model_config(self, model, version=""):
        return _config()

    def server_metadata(self):
        return {"name": "fake", "version": "0"}

    def infer(self, model, version, inputs, outputs, *, datatypes):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise cerr.TransientServerError("503 restarting")
        x = inputs[contract.INPUT_SUV]
        self.sent.append((x.shape, x.dtype, datatypes))
        folds = 1 / (1 + np.exp(-np.array([[x.mean() - 0.5, x.mean(), x.mean() + 0.5]], dtype=np.float32)))
        p = folds.mean(axis=1, keepdims=True)
        return {"probability": p, "fold_probabilities": folds, "logit": np.log(p / (1 - p))}

    def close(self):
        pass


def test_predict_volume_on_fake_transport_retries_then_predicts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTransport(fail_first=1)
    client = GliodeployClient("localhost", retries=2)
    monkeypatch.setattr(client, "_transport", lambda: fake)
    monkeypatch.setattr("gliodeploy.client.retry.time.sleep", lambda _s: None)
    vol = np.linspace(0.0, 0.5, int(np.prod(GRID))).reshape(GRID)  # mean 0.25
    pred = client.predict_volume(vol)
    assert fake.sent == [((1, 1, *GRID), np.float32, {"suv": "FP32"})]
    expected = 1 / (1 + np.exp(-np.array([-0.25, 0.25, 0.75])))
    np.testing.assert_allclose(pred.fold_probs, expected, atol=1e-6)
    assert pred.probability == pytest.approx(expected.mean(), abs=1e-6)
    assert pred.label == int(pred.probability >= 0.42) == 1 and pred.label_name == "recurrence"
    assert pred.fold_spread == pytest.approx(expected.std(), abs=1e-6)
    assert (pred.model_name, pred.model_version) == (contract.ENSEMBLE_MODEL, "2")
    with pytest.raises(InputError, match="model grid"):
        client.predict_volume(np.ones((4, 4, 4)))
    fp16 = GliodeployClient("localhost", fp16=True)
    monkeypatch.setattr(fp16, "_transport", lambda: fake)
    with pytest.raises(ConfigError, match="FP16"):
        fp16.predict_volume(vol)


# -- output -------------------------------------------------------------------------------------
def _results() -> list:
    ok = Prediction("a.nii.gz", 0.7, 1, 0.5, [0.6, 0.8], 0.1, 0.6, 0.8, "m", "1", {"read": 0.1, "total": 0.5})
    return [ok, ScanFailure("b.nii.gz", "b.nii.gz: 3 voxel(s) are NaN", "InputError", 2)]


def test_json_csv_and_human_output_round_trip() -> None:
    res = _results()
    doc = json.loads(to_json(res, {"model": {"name": "m"}}))
    assert (doc["n_ok"], doc["n_failed"]) == (1, 1)
    assert doc["results"][0]["label_name"] == "recurrence" and doc["results"][1]["ok"] is False
    rows = list(csv.DictReader(io.StringIO(to_csv(res))))
    assert rows[0]["probability"] == "0.700000" and rows[0]["fold_probs"] == "0.600000;0.800000"
    assert rows[1]["ok"] == "0" and "NaN" in rows[1]["error"]
    assert "P(recurrence)=0.700 -> recurrence" in human_line(res[0])
    assert human_line(res[1]).startswith("b.nii.gz: FAILED (InputError)")
    assert batch_exit_code(res) == cerr.EXIT_SOME_FAILED
    assert batch_exit_code(res[:1]) == 0 and batch_exit_code(res[1:]) == 2


# -- CLI against a closed port ------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_server_down_is_one_clean_error(tmp_path: Path, protocol: str) -> None:
    scan = tmp_path / "s.nii.gz"
    sitk.WriteImage(_image(np.random.default_rng(0).random((6, 7, 8))), str(scan))
    url = f"127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gliodeploy.client.cli",
            "predict",
            str(scan),
            "--assume-suv",
            "--url",
            url,
            "--protocol",
            protocol,
            "--retries",
            "1",
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == cerr.ServerUnavailableError.exit_code, proc.stderr
    assert proc.stderr.startswith("error: ") and "cannot connect" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = CliRunner().invoke(app, ["predict", str(tmp_path), "--json", "--csv"])
    assert res.exit_code == 2 and "choose one of --json and --csv" in res.output
    with pytest.raises(SystemExit) as exit_info:
        run_app(app, ["predict", str(tmp_path / "nope.nii.gz")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.nii.gz'}: no such file or folder\n"


def test_client_import_is_light() -> None:
    code = (
        "import sys, gliodeploy.client.cli, gliodeploy.client.api, gliodeploy.client.output; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'sklearn', 'nilearn')]; "
        "print(bad)"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]
    # cumulative import time (us) of the CLI module, from python's own -X importtime report
    line = next(ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith("| gliodeploy.client.cli"))
    assert int(line.split("|")[1]) < 1_500_000
