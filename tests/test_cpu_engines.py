"""CPU engines and precisions (gliodeploy.runtime.engines): parity with the float32 ONNX graph, the
``auto`` guard, clear errors, and the engine recorded in the version and shown by the client.

Tolerances (max |P(recurrence) - float32 ONNX Runtime|, on the tiny random-weight 2-fold model):
OpenVINO fp32 1e-5 (same arithmetic, other kernels); bf16 :data:`PROBABILITY_TOLERANCE` (0.002, the
``auto`` guard's); int8 0.05 (random weights are the worst case for post-training quantisation: the
guard, not this bound, decides whether int8 is used on a trained model) and ONNX Runtime int8 within
1e-3 of OpenVINO int8 (one QDQ graph, two engines; 5e-3 on a CPU without VNNI, where each engine
emulates the int8 dot product its own way). bf16 assertions run only on CPUs that compute
bf16 (AMX / AVX512-BF16); elsewhere bf16 must be refused with a reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gliodeploy import contract
from gliodeploy.errors import ConfigError
from gliodeploy.export.reference import load_reference_cases
from gliodeploy.runtime import engines
from gliodeploy.runtime.engines import (
    PROBABILITY_TOLERANCE,
    REFERENCE,
    EngineChoice,
    choose_auto,
    create_engine,
    guard,
    unavailable,
)

HAS_OPENVINO = engines.openvino_version() is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (gliodeploy[openvino])")
TOLERANCE = {"fp32": 1e-5, "bf16": PROBABILITY_TOLERANCE, "int8": 0.05}


@pytest.fixture(scope="module")
def graph(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The tiny export's model.onnx with a model.int8.onnx beside it, and its reference inputs."""
    from gliodeploy.runtime.quantize import quantize_int8

    version = tiny_repository / contract.ENSEMBLE_MODEL / "1"
    folder = tmp_path_factory.mktemp("engines")
    shutil.copyfile(version / "model.onnx", folder / "model.onnx")
    inputs = load_reference_cases(version).inputs()
    facts = quantize_int8(folder / "model.onnx", folder / engines.INT8_MODEL, inputs)
    assert facts["quantize_linear_nodes"] > 0 and facts["calibration_scans"] == len(inputs)
    return folder / "model.onnx", inputs


def _choices() -> list[EngineChoice]:
    return [c for c in engines.expand("auto", "auto") if c != REFERENCE]


@pytest.mark.parametrize("choice", _choices(), ids=str)
def test_parity_with_float32_graph(graph: tuple[Path, np.ndarray], choice: EngineChoice) -> None:
    path, inputs = graph
    if choice.engine == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino not installed (gliodeploy[openvino])")
    if choice.precision == "bf16" and not engines.native_bf16():
        assert "would be emulated" in (unavailable(choice, path) or "")
        pytest.skip(f"this CPU ({engines.cpu_summary()}) has no AMX-BF16/AVX512-BF16: bf16 is refused")
    ref = create_engine(path, REFERENCE).run(inputs)
    got = create_engine(path, choice).run(inputs)
    for name in engines.OUTPUTS:
        assert got[name].shape == ref[name].shape, name
    diff = np.abs(got[contract.OUTPUT_PROBABILITY] - ref[contract.OUTPUT_PROBABILITY]).max()
    assert diff <= TOLERANCE[choice.precision], f"{choice}: {diff}"


@needs_openvino
def test_int8_same_graph_both_engines(graph: tuple[Path, np.ndarray]) -> None:
    path, inputs = graph
    a = create_engine(path, EngineChoice("onnxruntime", "int8")).probabilities(inputs)
    b = create_engine(path, EngineChoice("openvino", "int8")).probabilities(inputs)
    # With VNNI both engines multiply int8 exactly (within 1e-3, measured on Intel AVX-512 VNNI). Without
    # it (AVX2 only) each engine emulates the int8 dot product its own way (u8 x s8 pairs saturate in
    # 16 bits): 1.6e-3 measured on an AMD EPYC (AVX2), so 5e-3 there.
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & engines.cpu_flags())
    np.testing.assert_allclose(a, b, atol=1e-3 if vnni else 5e-3)


def _fixed(probs: list[float]):  # noqa: ANN202 - a fake engine: case i -> probs[i]
    it = iter([probs[0], *probs])  # the warm-up call takes the first value too

    def run(_x: np.ndarray) -> np.ndarray:
        return np.array([next(it)])

    return run


def test_auto_falls_back_to_float32_when_a_precision_flips_a_decision() -> None:
    inputs = np.zeros((3, 1, 2, 2, 2), np.float32)
    reference = np.array([0.52, 0.10, 0.90])  # case 0 sits just above the threshold 0.5
    candidates = [
        (EngineChoice("onnxruntime", "fp32"), _fixed([0.52, 0.10, 0.90])),
        (EngineChoice("openvino", "bf16"), _fixed([0.49, 0.10, 0.90])),  # flips case 0
        (EngineChoice("openvino", "int8"), _fixed([0.52, 0.13, 0.90])),  # beyond the tolerance
        (EngineChoice("onnxruntime", "int8"), "no model.int8.onnx"),
    ]
    decision = choose_auto(inputs, reference, 0.5, candidates)
    assert decision.choice == EngineChoice("onnxruntime", "fp32")
    assert decision.reason.startswith("fell back to float32")
    assert "1 decision flip" in decision.reason and "> tolerance" in decision.reason
    by = {str(c.choice): c for c in decision.candidates}
    assert by["openvino/bf16"].flips == 1 and not by["openvino/bf16"].accepted
    assert not by["onnxruntime/int8"].accepted and by["onnxruntime/int8"].p50_ms is None
    json.dumps(decision.to_dict())  # recorded as JSON


def test_auto_keeps_a_passing_reduced_precision_and_guard_rules() -> None:
    inputs = np.zeros((2, 1, 2, 2, 2), np.float32)
    reference = np.array([0.7, 0.2])
    # The only candidate: a passing bf16 is kept (no speed comparison needed to prove the rule).
    decision = choose_auto(inputs, reference, 0.5, [(EngineChoice("openvino", "bf16"), _fixed([0.701, 0.2]))])
    assert decision.choice == EngineChoice("openvino", "bf16") and "no decision flip" in decision.reason
    assert guard(np.array([0.5]), np.array([0.4999]), 0.5)[0] == 1  # p >= threshold is recurrence
    assert guard(np.array([np.nan]), np.array([0.2]), 0.5)[2]  # NaN never passes
    nothing = choose_auto(inputs, reference, 0.5, [(EngineChoice("openvino", "int8"), "unavailable")])
    assert nothing.choice == REFERENCE and "no candidate passed" in nothing.reason


def test_auto_stops_measuring_a_clearly_slower_candidate() -> None:
    import time

    calls = []

    def slow(_x: np.ndarray) -> np.ndarray:
        calls.append(1)
        time.sleep(0.08)
        return np.array([0.7])

    inputs = np.zeros((4, 1, 2, 2, 2), np.float32)
    reference = np.full(4, 0.7)
    fast = (EngineChoice("openvino", "fp32"), _fixed([0.7] * 4))
    decision = choose_auto(inputs, reference, 0.5, [fast, (EngineChoice("onnxruntime", "int8"), slow)])
    assert (
        decision.choice == EngineChoice("openvino", "fp32") and "slower: onnxruntime/int8" in decision.reason
    )
    assert len(calls) == 2  # the warm-up and one case, not all four


def test_clear_errors(graph: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = graph
    with pytest.raises(ConfigError, match="unknown engine 'tensorrt'"):
        create_engine(path, EngineChoice("tensorrt", "fp32"))
    with pytest.raises(ConfigError, match="no bf16 CPU kernels"):
        create_engine(path, EngineChoice("onnxruntime", "bf16"))
    no_amx = frozenset({"avx2", "fma"})
    assert "would be emulated" in unavailable(EngineChoice("openvino", "bf16"), path, no_amx)
    assert "has no model.int8.onnx" in unavailable(
        EngineChoice("openvino", "int8"), path.parent / "x" / "m.onnx"
    )
    monkeypatch.setattr(engines, "openvino_version", lambda: None)
    with pytest.raises(ConfigError, match="OpenVINO is not installed"):
        create_engine(path, EngineChoice("openvino", "fp32"))


def test_engine_recorded_in_version_and_offline_info(tiny_repository: Path) -> None:
    from gliodeploy.export.repository import parse_config
    from gliodeploy.predict.offline import OfflinePredictor

    model_dir = tiny_repository / contract.ENSEMBLE_MODEL
    local = parse_config(model_dir / "configs" / "local.pbtxt")
    recorded = json.loads(local.parameters[contract.PARAM_CPU_RUNTIME].string_value)
    assert recorded == {"engine": "onnxruntime", "precision": "fp32"}
    meta = json.loads((model_dir / "1" / "metadata.json").read_text(encoding="utf-8"))
    assert (meta["profile"]["cpu_engine"], meta["profile"]["cpu_precision"]) == ("onnxruntime", "fp32")
    assert OfflinePredictor(tiny_repository).info.runtime_text() == "onnxruntime/fp32"


def test_predict_cli_refuses_an_unknown_engine_in_one_line(tiny_repository: Path, tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"never read")
    res = subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", "predict", str(tiny_repository), str(scan), "--engine", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "error: unknown engine 'x'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.server
def test_client_info_shows_the_served_engine(triton_server) -> None:  # noqa: ANN001 - conftest fixture
    from typer.testing import CliRunner

    from gliodeploy.client.cli import app

    res = CliRunner().invoke(app, ["info", "--url", triton_server.http_url])
    assert res.exit_code == 0, res.output
    assert "CPU engine: onnxruntime/fp32" in res.output


@pytest.mark.server
@needs_openvino
def test_serve_resolves_auto_and_publishes_the_engine(tiny_repository: Path) -> None:
    """What `gliodeploy serve --cpu-engine auto --cpu-precision auto` does, through the real server."""
    import tritonclient.http as httpclient

    from gliodeploy.client.api import GliodeployClient
    from gliodeploy.export.modelcard import verify_repository
    from gliodeploy.serving import TritonServer
    from gliodeploy.serving.cpu_runtime import choose_served_runtime, publish_runtime

    def prepare(served: Path) -> None:
        publish_runtime(served, "local", choose_served_runtime(served, "local", "auto", "auto"))

    cases = load_reference_cases(tiny_repository / contract.ENSEMBLE_MODEL / "1")
    with TritonServer(
        tiny_repository, verify=verify_repository, prepare=prepare, startup_timeout=90
    ) as server:
        with GliodeployClient(server.http_url) as client:
            runtime = client.info().cpu_runtime
        assert runtime and runtime["engine"] in engines.ENGINES and runtime["auto"].startswith("auto: ")
        http = httpclient.InferenceServerClient(server.http_url)
        x = cases.inputs()[:1]
        inp = httpclient.InferInput(contract.INPUT_SUV, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = http.infer(contract.ENSEMBLE_MODEL, [inp]).as_numpy(contract.OUTPUT_PROBABILITY)
    assert abs(float(got.ravel()[0]) - float(cases.probability[0])) <= PROBABILITY_TOLERANCE
    # The user's repository is untouched: the choice lives in the served copy only.
    local = (tiny_repository / contract.ENSEMBLE_MODEL / "configs" / "local.pbtxt").read_text()
    assert '"engine": "onnxruntime"' in local.replace('\\"', '"')
