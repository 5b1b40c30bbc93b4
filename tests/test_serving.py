"""The real Triton server (bundled in nvidia-pytriton) serving an exported tiny ensemble."""

from __future__ import annotations

import csv
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from gliodeploy import contract
from gliodeploy.errors import ServerError
from gliodeploy.export.ensemble import EnsembleModule
from gliodeploy.export.onnx_export import torch_outputs
from gliodeploy.serving import TritonServer
from gliodeploy.training.rundir import RunDir

pytestmark = pytest.mark.server
SHAPE = (32, 32, 21)
OUTPUTS = (contract.OUTPUT_PROBABILITY, contract.OUTPUT_FOLD_PROBABILITIES, contract.OUTPUT_LOGIT)


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.gamma(2.0, 1.0, size=(3, 1, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tiny_run, scans) -> dict[str, np.ndarray]:
    return torch_outputs(EnsembleModule(RunDir(tiny_run).load_fold_models()), scans)


def _http(server: TritonServer, x: np.ndarray) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput(contract.INPUT_SUV, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer(contract.ENSEMBLE_MODEL, [inp])
    return {name: res.as_numpy(name) for name in OUTPUTS}


def test_http_and_grpc_match_pytorch(triton_server, scans, reference):
    # One request of the local config's largest batch (2 by default: see [batching.local]).
    config = httpclient.InferenceServerClient(triton_server.http_url).get_model_config(
        contract.ENSEMBLE_MODEL
    )
    n = int(config["max_batch_size"])
    assert 1 < n <= len(scans)
    got = _http(triton_server, scans[:n])
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], reference[name][:n], atol=1e-5)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert client.is_model_ready(contract.NATIVE_PIPELINE_MODEL)
    inp = grpcclient.InferInput(contract.INPUT_SUV, [1, 1, *SHAPE], "FP32")
    inp.set_data_from_numpy(scans[1:2])
    res = client.infer(contract.ENSEMBLE_MODEL, [inp])
    for name in OUTPUTS:
        np.testing.assert_allclose(res.as_numpy(name), reference[name][1:2], atol=1e-5)


def _settled_stats(client: httpclient.InferenceServerClient, model: str, timeout: float = 10.0) -> dict:
    """The model's statistics once two reads 0.2 s apart agree.

    Triton counts a request when it is released, which can be after its response reached the client:
    under load a previous test's last request (or this test's last one) is counted a moment later.
    """
    deadline = time.monotonic() + timeout
    last = client.get_inference_statistics(model)["model_stats"][0]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = client.get_inference_statistics(model)["model_stats"][0]
        if (
            now["inference_count"] == last["inference_count"]
            and now["execution_count"] == last["execution_count"]
        ):
            return now
        last = now
    return last


def test_dynamic_batching_groups_concurrent_requests(triton_server, scans, reference):
    client = httpclient.InferenceServerClient(triton_server.http_url)
    before = _settled_stats(client, contract.ENSEMBLE_MODEL)
    singles = [scans[i % 3 : i % 3 + 1] for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda x: _http(triton_server, x), singles))
    for i, res in enumerate(results):
        np.testing.assert_allclose(
            res[contract.OUTPUT_PROBABILITY], reference["probability"][i % 3 : i % 3 + 1], atol=1e-5
        )
    after = _settled_stats(client, contract.ENSEMBLE_MODEL)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 16
    assert executions < inferences, f"{executions} executions for {inferences} requests: no batching"


def test_native_pipeline_equals_client_side_preprocessing(triton_server, tiny_run, tmp_path):
    """Server-side geometry (gliodeploy_native) vs preprocess() on the client: same code, same result."""
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import preprocess
    from gliodeploy.synth import generate_cohort

    manifest = generate_cohort(tmp_path, n=4, seed=5, size="tiny", test_fraction=0.0, progress=False)
    with open(manifest, newline="") as fh:
        row = next(csv.DictReader(fh))
    image = load_pet(Path(tmp_path) / row["image"]).image
    grid = preprocess(image, RunDir(tiny_run).preprocessing()).array[np.newaxis, np.newaxis]
    local = _http(triton_server, np.ascontiguousarray(grid, dtype=np.float32))

    client = httpclient.InferenceServerClient(triton_server.http_url)
    arrays = {
        contract.INPUT_NATIVE_VOLUME: sitk.GetArrayFromImage(image).astype(np.float32),
        contract.INPUT_SPACING: np.array(image.GetSpacing(), dtype=np.float64),
        contract.INPUT_ORIGIN: np.array(image.GetOrigin(), dtype=np.float64),
        contract.INPUT_DIRECTION: np.array(image.GetDirection(), dtype=np.float64),
    }
    inputs = []
    for name, arr in arrays.items():
        inp = httpclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "FP64")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    res = client.infer(contract.NATIVE_PIPELINE_MODEL, inputs)
    # Identical code on identical input: only float summation order may differ.
    for name in OUTPUTS:
        np.testing.assert_allclose(res.as_numpy(name), local[name], atol=1e-5)


def test_geometry_rejects_bad_input_per_request(triton_server):
    client = httpclient.InferenceServerClient(triton_server.http_url)
    inputs = []
    for name, arr in {
        contract.INPUT_NATIVE_VOLUME: np.zeros((4, 4, 4), np.float32),
        contract.INPUT_SPACING: np.ones(3),
        contract.INPUT_ORIGIN: np.zeros(3),
        contract.INPUT_DIRECTION: np.eye(3).ravel(),
    }.items():
        inp = httpclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "FP64")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    with pytest.raises(Exception, match="geometry"):
        client.infer(contract.GEOMETRY_MODEL, inputs)
    assert client.is_server_live()


def test_start_failure_is_clear_and_leaves_no_process(tiny_repository, tmp_path):
    broken = tmp_path / "repo"
    broken.mkdir()
    (broken / "bad").mkdir()
    (broken / "bad" / "1").mkdir()
    (broken / "bad" / "config.pbtxt").write_text('name: "bad"\nbackend: "onnxruntime"\nmax_batch_size: 1\n')
    server = TritonServer(broken, model_config_name=None, startup_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="tritonserver exited|not ready") as exc:
        server.start()
    assert time.monotonic() - t0 < 30
    assert "onnxruntime" in str(exc.value)
    assert server.process is None
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    with pytest.raises(ServerError, match="not found"):
        TritonServer(tmp_path / "missing")


def test_stop_kills_process_group_and_cleans_shm(tiny_repository):
    server = TritonServer(tiny_repository, startup_timeout=90).start()
    pid = server.process.pid
    assert list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
