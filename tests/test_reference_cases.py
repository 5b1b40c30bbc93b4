"""Reference cases in every exported version, checked by `gliodeploy verify REPO [--server URL]`.

The bundled Triton server (tests/conftest.py fixtures) must answer them as PyTorch did; a server whose
repository had its ONNX graph swapped for another export's, with every checksum regenerated so that the
local verification passes, must be caught by the server-side check alone.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gliodeploy import contract
from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.export.modelcard import CHECKSUMS, verify_repository
from gliodeploy.export.reference import (
    FP32_TOLERANCE,
    REFERENCE_FILE,
    load_reference_cases,
    select_cases,
)

ENS = contract.ENSEMBLE_MODEL


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from gliodeploy.cli import app
    from gliodeploy.cli_utils import run_app

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_app(app, argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_reference_cases_are_stored_checksummed_and_exact(repo: Path, tiny_run: Path) -> None:
    import torch

    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.training.rundir import RunDir

    version = repo / ENS / "1"
    path = version / REFERENCE_FILE
    assert path.stat().st_size < 100_000  # compressed, float16 inputs
    assert REFERENCE_FILE in (version / CHECKSUMS).read_text()
    assert f"{ENS}/1/{REFERENCE_FILE}" in (repo / CHECKSUMS).read_text()
    card = json.loads((version / "metadata.json").read_text())
    assert card["reference_cases"]["tolerance"] == FP32_TOLERANCE
    assert card["parity"]["decision_threshold"] == 0.5 and card["parity"]["n_inputs"] == 4
    cases = load_reference_cases(version)
    assert len(cases.case) == 4 and cases.suv.dtype == np.float16 and cases.threshold == 0.5
    assert [c["case"] for c in card["reference_cases"]["cases"]] == list(cases.case)
    # PyTorch's answers on exactly the stored inputs, and the decisions at the version's threshold
    ensemble = EnsembleModule(RunDir(tiny_run).load_fold_models())
    with torch.inference_mode():
        prob, folds, _ = ensemble(torch.from_numpy(cases.inputs()))
    np.testing.assert_allclose(cases.probability, prob.numpy().reshape(-1), atol=1e-6)
    np.testing.assert_allclose(cases.fold_probabilities, folds.numpy(), atol=1e-6)
    assert list(cases.decision) == [int(p >= 0.5) for p in cases.probability]


def test_case_selection_prefers_the_operating_point() -> None:
    p = np.array([0.1, 0.49, 0.9, 0.50004, 0.52, 0.3])
    assert select_cases(p, 0.5, n=3) == [1, 4, 5]  # 0.50004 is closer than the FP32 tolerance: skipped
    assert select_cases(np.array([0.50001]), 0.5) == [0]  # nothing else: kept


def _rewrite_npz(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def test_tampered_or_missing_reference_cases_are_refused(repo: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "model_repository"
    shutil.copytree(repo, copy)
    path = copy / ENS / "1" / REFERENCE_FILE
    cases = load_reference_cases(path.parent)
    _rewrite_npz(path, probability=cases.probability + 0.2)  # the expected answers moved
    code, _, err = _cli(["verify", str(copy)], capsys)
    assert code == ModelError.exit_code and f"{REFERENCE_FILE} was modified after export" in err
    assert err.startswith("error: ") and "Traceback" not in err
    path.unlink()
    code, _, err = _cli(["verify", str(copy)], capsys)
    assert code == ModelError.exit_code and "missing" in err and REFERENCE_FILE in err


def test_verify_server_down_is_one_clear_line(repo: Path, capsys) -> None:
    from gliodeploy.errors import ServerError

    argv = ["verify", str(repo), "--server", "127.0.0.1:9", "--retries", "0", "--timeout", "2"]
    code, _, err = _cli(argv, capsys)
    assert code == ServerError.exit_code and "cannot connect to the server" in err
    assert "Traceback" not in err


def test_bad_tolerance_is_a_clear_error(repo: Path, capsys) -> None:
    code, _, err = _cli(["verify", str(repo), "--server", "127.0.0.1:9", "--tolerance", "2"], capsys)
    assert code == ConfigError.exit_code and "--tolerance must be in (0, 1)" in err
    code, _, err = _cli(["verify", str(repo), "--tolerance", "1e-3"], capsys)
    assert code == ConfigError.exit_code and "--server" in err


@pytest.mark.server
def test_verify_server_passes_on_the_bundled_server(
    request: pytest.FixtureRequest, repo: Path, capsys
) -> None:
    server = request.getfixturevalue("triton_server")  # serves tiny_repository, of which repo is a copy
    code, out, err = _cli(["verify", str(repo), "--server", server.http_url], capsys)
    assert code == 0, err
    assert "parity-" in out and "max |dp|" in out and out.rstrip().endswith("OK")
    code, out, err = _cli(
        ["verify", str(repo), "--server", server.grpc_url, "--protocol", "grpc", "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["decision_flips"] == 0 and doc["version"] == 1 and not doc["problems"]
    assert doc["max_abs_diff"] < 1e-5 and len(doc["cases"]) == 4


def _swap_model(repo: Path, tiny_run: Path, tmp_path: Path) -> None:
    """Replace version 1's ONNX graph by another export's (other weights), then regenerate the version's
    SHA256SUMS, the published model checksum and the repository manifest: `verify` alone passes."""
    import torch

    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.integrity import model_checksum_json
    from gliodeploy.export.modelcard import write_checksums
    from gliodeploy.export.onnx_export import export_onnx
    from gliodeploy.export.publish import write_manifest
    from gliodeploy.export.repository import config_paths, config_text, parse_config
    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = PreprocessConfig.tiny()
    folds = []
    for k in range(2):
        torch.manual_seed(900 + k)
        folds.append(build_model("cnn3d", preprocessing=cfg, width="quarter"))
    version = repo / ENS / "1"
    cases = load_reference_cases(version)
    other = tmp_path / "other"
    other.mkdir()
    export_onnx(
        EnsembleModule(folds), other / "model.onnx", input_shape=cfg.shape, parity_inputs=cases.inputs()
    )
    shutil.copyfile(other / "model.onnx", version / "model.onnx")
    write_checksums(version)
    for path in config_paths(repo / ENS).values():
        config = parse_config(path)
        config.parameters[contract.PARAM_MODEL_CHECKSUM].string_value = model_checksum_json(version, 1)
        path.write_text(config_text(config))
    write_manifest(repo)


@pytest.mark.server
def test_verify_server_catches_a_swapped_model(repo: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    from gliodeploy.serving import TritonServer

    swapped = tmp_path / "model_repository"
    shutil.copytree(repo, swapped)
    _swap_model(swapped, tiny_run, tmp_path)
    verify_repository(swapped)  # every checksum agrees: only the server-side check can tell
    with TritonServer(swapped, startup_timeout=90) as server:
        code, out, err = _cli(["verify", str(swapped), "--server", server.http_url], capsys)
        assert code == ModelError.exit_code, out
        assert out.count("FAIL") == 4 and "parity-" in out
        assert err.startswith("error: ") and "the served model is not the exported one" in err
        assert "above the tolerance" in err and "Traceback" not in err
        # JSON for machines: which case differs by how much
        code, out, _ = _cli(["verify", str(swapped), "--server", server.http_url, "--json"], capsys)
        doc = json.loads(out)
        assert code == ModelError.exit_code and not doc["ok"]
        assert all(c["max_abs_diff"] > FP32_TOLERANCE and not c["ok"] for c in doc["cases"])
        # the original repository against this server: another model checksum is served as well
        code, out, err = _cli(["verify", str(repo), "--server", server.http_url, "--json"], capsys)
        doc = json.loads(out)
        assert code == ModelError.exit_code and "model checksum" in doc["problems"][0]


class _PublishedServer:
    """What a server publishes (info) and answers (the version's own PyTorch answers, shifted by ``dp``),
    for checking which tolerance `verify --server` applies; the real servers are in the tests above."""

    def __init__(self, version_dir: Path, precision: str | None, dp: float) -> None:
        from types import SimpleNamespace

        self.cases = load_reference_cases(version_dir)
        runtime = {"engine": "openvino", "precision": precision} if precision else None
        self.info = lambda: SimpleNamespace(
            threshold=self.cases.threshold, checksum=None, cpu_runtime=runtime
        )
        self.endpoint = SimpleNamespace(url="http://published.example:8000")
        self.dp = dp

    def predict_volume(self, array: np.ndarray, source: str):  # noqa: ANN201
        from types import SimpleNamespace

        i = list(self.cases.case).index(source)
        p = float(self.cases.probability[i])
        shift = self.dp if p < self.cases.threshold - 0.01 or p > self.cases.threshold + 0.01 else 0.0
        folds = [float(f) + shift for f in self.cases.fold_probabilities[i]]
        return SimpleNamespace(probability=p + shift, fold_probs=folds)


def test_reduced_precision_engine_gets_the_guard_tolerance(repo: Path) -> None:
    from gliodeploy.export.reference import check_server
    from gliodeploy.runtime.engines import PROBABILITY_TOLERANCE

    version_dir = repo / ENS / "1"
    dp = 1e-3  # what bf16 moves a probability by: above FP32's bound, inside the auto guard's
    fp32 = check_server(version_dir, 1, _PublishedServer(version_dir, None, dp))
    assert fp32.tolerance == FP32_TOLERANCE and not fp32.ok
    bf16 = check_server(version_dir, 1, _PublishedServer(version_dir, "bf16", dp))
    assert bf16.tolerance == PROBABILITY_TOLERANCE and bf16.ok
    # An explicit --tolerance is the user's and stays as given.
    strict = check_server(version_dir, 1, _PublishedServer(version_dir, "bf16", dp), tolerance=FP32_TOLERANCE)
    assert strict.tolerance == FP32_TOLERANCE and not strict.ok
