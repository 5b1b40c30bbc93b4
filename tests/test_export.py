"""Export: ONNX/TorchScript parity, versioned repository, model card, checksums, configs, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gliodeploy import contract
from gliodeploy.errors import ConfigError, InputError, ModelError
from gliodeploy.export.ensemble import EnsembleModule
from gliodeploy.export.modelcard import CHECKSUMS, verify_repository
from gliodeploy.export.onnx_export import export_onnx, export_torchscript, torch_outputs
from gliodeploy.export.pipeline import export_run
from gliodeploy.export.profiles import ExportProfile
from gliodeploy.export.repository import (
    EnsembleSpec,
    config_paths,
    config_text,
    ensemble_config,
    parse_config,
    validate_configs,
)
from gliodeploy.training.rundir import RunDir

SHAPE = (32, 32, 21)


@pytest.fixture(scope="module")
def ensemble(tiny_run) -> EnsembleModule:
    return EnsembleModule(RunDir(tiny_run).load_fold_models())


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.gamma(2.0, 1.0, size=(3, 1, *SHAPE)) * (rng.random((3, 1, *SHAPE)) > 0.3)).astype(np.float32)


def test_ensemble_outputs_are_mean_of_fold_sigmoids(ensemble, scans):
    out = torch_outputs(ensemble, scans)
    x = torch.from_numpy(scans)
    with torch.no_grad():
        folds = np.concatenate([torch.sigmoid(m(x)).numpy() for m in ensemble.folds], axis=1)
    np.testing.assert_allclose(out["fold_probabilities"], folds, atol=1e-6)
    np.testing.assert_allclose(out["probability"], folds.mean(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-out["logit"])), out["probability"], atol=1e-5)


def test_onnx_parity_and_fp16(ensemble, scans, tmp_path):
    report = export_onnx(ensemble, tmp_path / "m.onnx", input_shape=SHAPE, parity_inputs=scans)
    assert report.max_abs_diff < 1e-5 and report.n_inputs == 3
    half = export_onnx(ensemble, tmp_path / "h.onnx", input_shape=SHAPE, parity_inputs=scans, fp16=True)
    assert half.max_abs_diff < 2e-2
    assert (tmp_path / "h.onnx").stat().st_size < (tmp_path / "m.onnx").stat().st_size * 0.75


def test_onnx_external_data_and_torchscript(ensemble, scans, tmp_path):
    export_onnx(ensemble, tmp_path / "e.onnx", input_shape=SHAPE, parity_inputs=scans, external_data=True)
    assert (tmp_path / "e.onnx.data").stat().st_size > (tmp_path / "e.onnx").stat().st_size
    ts = export_torchscript(ensemble, tmp_path / "m.pt", input_shape=SHAPE, parity_inputs=scans)
    assert ts.max_abs_diff < 1e-5 and (tmp_path / "m.pt").is_file()


def test_parity_failure_is_loud_and_leaves_no_file(ensemble, scans, tmp_path):
    with pytest.raises(ModelError, match="does not match PyTorch"):
        export_onnx(
            ensemble, tmp_path / "m.onnx", input_shape=SHAPE, parity_inputs=scans, tolerance=0.0, fp16=True
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="shape"):
        export_onnx(ensemble, tmp_path / "m.onnx", input_shape=SHAPE, parity_inputs=scans[:, :, :8])


def test_repository_layout_card_and_configs(tiny_repository, tiny_run):
    found = verify_repository(tiny_repository)
    assert found == {
        m: [1] for m in (contract.ENSEMBLE_MODEL, contract.GEOMETRY_MODEL, contract.NATIVE_PIPELINE_MODEL)
    }
    version = tiny_repository / contract.ENSEMBLE_MODEL / "1"
    assert {p.name for p in version.iterdir()} >= {
        "model.onnx",
        "model.py",
        "metadata.json",
        "README.md",
        CHECKSUMS,
    }
    card = json.loads((version / "metadata.json").read_text())
    assert card["folds"] == 2 and card["threshold"] == 0.5 and card["architecture"]["name"] == "cnn3d"
    assert card["operating_point"]["method"] == "fixed" and card["operating_point"]["sensitivity"] is None
    assert card["preprocessing"] == RunDir(tiny_run).plans()["preprocessing"]
    assert card["parity"]["max_abs_diff"] < 1e-4 and card["packages"]["onnxruntime"]
    assert [o["name"] for o in card["outputs"]] == ["probability", "fold_probabilities", "logit"]
    configs = validate_configs(tiny_repository)
    assert len(configs) == 9
    gpu = parse_config(tiny_repository / contract.ENSEMBLE_MODEL / "config.pbtxt")
    assert gpu.backend == "onnxruntime" and gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU
    assert list(gpu.input[0].dims) == [1, *SHAPE] and list(gpu.output[1].dims) == [2]
    local = parse_config(tiny_repository / contract.ENSEMBLE_MODEL / "configs" / "local.pbtxt")
    assert local.backend == "python" and local.dynamic_batching.max_queue_delay_microseconds > 0
    native = parse_config(tiny_repository / contract.NATIVE_PIPELINE_MODEL / "config.pbtxt")
    assert [s.model_name for s in native.ensemble_scheduling.step] == [
        contract.GEOMETRY_MODEL,
        contract.ENSEMBLE_MODEL,
    ]


def test_gpu_profile_sets_tensorrt_fp16():
    profile = ExportProfile.from_toml("export/gpu.toml")
    cfg = ensemble_config(EnsembleSpec(SHAPE, 10, "onnx"), profile, "gpu")
    trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16] and cfg.max_batch_size == 16


def test_gpu_config_is_ready_when_ready(tmp_path):
    """TensorRT profile shapes over 1..max batch, caches on a writable path, warmup over the batch sizes,
    per-target max_batch_size: all parsed back through Triton's ModelConfig."""
    profile = ExportProfile.from_toml("export/gpu.toml")
    spec = EnsembleSpec(SHAPE, 10, "onnx")
    parsed = {}
    for target in ("gpu", "cpu", "local"):
        (tmp_path / f"{target}.pbtxt").write_text(config_text(ensemble_config(spec, profile, target)))
        parsed[target] = parse_config(tmp_path / f"{target}.pbtxt")
    gpu = parsed["gpu"]
    trt = dict(gpu.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    item = "1x32x32x21"
    assert trt["trt_profile_min_shapes"] == f"suv:1x{item}"
    assert trt["trt_profile_opt_shapes"] == f"suv:16x{item}"
    assert trt["trt_profile_max_shapes"] == f"suv:16x{item}"
    assert trt["trt_engine_cache_enable"] == trt["trt_timing_cache_enable"] == "1"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == "/tmp/gliodeploy-trt-cache"
    for target, sizes in (("gpu", [1, 4, 8, 16]), ("cpu", [1, 2])):
        warm = parsed[target].model_warmup
        assert [w.batch_size for w in warm] == sizes
        assert all(list(w.inputs["suv"].dims) == [1, *SHAPE] and w.inputs["suv"].random_data for w in warm)
    assert not parsed["local"].model_warmup  # the bundled server starts in seconds: nothing to build
    assert [parsed[t].max_batch_size for t in ("gpu", "cpu", "local")] == [16, 2, 2]
    assert list(parsed["cpu"].dynamic_batching.preferred_batch_size) == [2]
    # No cache path: no cache parameters; no warmup when the profile turns it off.
    bare = ExportProfile.from_dict({"tensorrt_cache_path": "", "warmup": False})
    cfg = ensemble_config(spec, bare, "gpu")
    keys = set(cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    assert "trt_profile_max_shapes" in keys and not any("cache" in k for k in keys)
    assert not cfg.model_warmup


def test_per_target_batching_defaults_and_overrides(tmp_path):
    default = ExportProfile()
    assert [default.batching(t).max_batch_size for t in ("gpu", "cpu", "local")] == [8, 2, 2]
    cpu = ExportProfile.from_toml("export/cpu.toml")
    assert cpu.batching("cpu").preferred_batch_sizes == (2, 4) and cpu.batching("local").max_batch_size == 2
    prof = tmp_path / "p.toml"
    prof.write_text(
        "[batching]\nmax_batch_size = 16\npreferred_batch_sizes = [4, 8, 16]\n"
        "[batching.cpu]\nmax_batch_size = 8\n[batching.local]\nmax_batch_size = 1\n"
    )
    p = ExportProfile.from_toml(prof)
    assert p.batching("cpu").preferred_batch_sizes == (4, 8)  # the GPU's preferred sizes that fit
    assert p.batching("local").max_batch_size == 1 and p.batching("local").preferred_batch_sizes == ()
    assert p.to_dict()["cpu_batching"]["max_batch_size"] == 8
    for text, match in (
        ("[batching.cpu]\nmax_batch_size = 0\n", "batching.cpu.*max_batch_size must be >= 1"),
        ("[batching.cpu]\nmax_batch_size = 2\npreferred_batch_sizes = [4]\n", "preferred_batch_sizes"),
        ("[batching.local]\nbatch = 2\n", "unknown key"),
        ('tensorrt_cache_path = "cache"\n', "absolute path"),
    ):
        prof.write_text(text)
        with pytest.raises(ConfigError, match=match):
            ExportProfile.from_toml(prof)


def test_onnx_ir_version_is_minimal_and_recorded(tiny_repository):
    import onnx
    import onnx.helper
    import onnxruntime as ort

    version = tiny_repository / contract.ENSEMBLE_MODEL / "1"
    model = onnx.load(str(version / "model.onnx"))
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import), True) == 8
    ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    card = json.loads((version / "metadata.json").read_text())
    assert card["runtime"] == {
        "onnx_ir_version": 8,
        "onnx_opset": 18,
        "min_onnxruntime": "1.14",
        "min_triton": "23.04",
    }
    assert "ONNX Runtime >= 1.14 (Triton container >= 23.04)" in (version / "README.md").read_text()


def test_profile_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("max_batch_size = 2\npreferred_batch_sizes = [4]\n")
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        ExportProfile.from_toml(bad)
    bad.write_text("max_batchsize = 2\n")
    with pytest.raises(ConfigError, match="unknown export profile key"):
        ExportProfile.from_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        ExportProfile.from_toml(tmp_path / "missing.toml")


def test_second_export_adds_version_and_keeps_first(tiny_run, tiny_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    v1 = repo / contract.ENSEMBLE_MODEL / "1"
    before = {p.relative_to(v1): p.read_bytes() for p in v1.rglob("*") if p.is_file()}
    result = export_run(tiny_run, repo, threshold=0.5)
    assert result.version == 2
    assert {p.relative_to(v1): p.read_bytes() for p in v1.rglob("*") if p.is_file()} == before
    assert verify_repository(repo)[contract.GEOMETRY_MODEL] == [1, 2]


def test_tampered_and_corrupt_files_are_named(tiny_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    onnx_file = repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="model.onnx was modified"):
        verify_repository(repo)
    shutil.rmtree(repo)
    shutil.copytree(tiny_repository, repo)
    (repo / contract.GEOMETRY_MODEL / "1" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="extra.bin"):
        verify_repository(repo)
    (repo / contract.GEOMETRY_MODEL / "1" / "extra.bin").unlink()
    cfg = config_paths(repo / contract.NATIVE_PIPELINE_MODEL)["local"]
    cfg.write_text(cfg.read_text() + "\nnot_a_field: 3\n")
    with pytest.raises(ModelError, match="local.pbtxt"):
        verify_repository(repo)


def test_interrupted_export_leaves_no_version(tiny_run, tiny_repository, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    snapshot = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("gliodeploy.export.pipeline.write_card", boom)
    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_run, repo, threshold=0.5)
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == snapshot
    verify_repository(repo)


def _exit_code(argv: list[str], capsys) -> tuple[int, str]:
    from gliodeploy.cli import app
    from gliodeploy.cli_utils import run_app

    with pytest.raises(SystemExit) as exc:
        run_app(app, argv)
    return int(exc.value.code or 0), capsys.readouterr().err


def test_export_cli_and_verify_exit_codes(tiny_run, tmp_path, capsys):
    from typer.testing import CliRunner

    from gliodeploy.cli import app

    runner = CliRunner()
    repo = tmp_path / "repo"
    res = runner.invoke(
        app, ["export", str(tiny_run), "--out", str(repo), "--format", "torchscript", "--threshold", "0.5"]
    )
    assert res.exit_code == 0, res.output
    assert (repo / contract.ENSEMBLE_MODEL / "1" / "model.pt").is_file()
    assert not config_paths(repo / contract.ENSEMBLE_MODEL)["local"].exists()
    assert parse_config(repo / contract.ENSEMBLE_MODEL / "config.pbtxt").backend == "pytorch"
    ok = runner.invoke(app, ["verify", str(repo)])
    assert ok.exit_code == 0 and "OK" in ok.output
    (repo / contract.GEOMETRY_MODEL / "1" / "preprocessing.json").write_text("{}")
    code, err = _exit_code(["verify", str(repo)], capsys)
    assert code == ModelError.exit_code and "preprocessing.json" in err
    code, err = _exit_code(["export", str(tmp_path / "nope"), "--out", str(repo)], capsys)
    assert code == ModelError.exit_code and "plans.json" in err


# ---- the operating point travels with the model (chosen on OOF by `gliodeploy evaluate`) -----------
def _evaluated_run(tiny_run: Path, tmp_path: Path, *, calibrate: bool = False) -> Path:
    """``tiny_run`` plus OOF predictions and the operating point `gliodeploy evaluate` would write."""
    from gliodeploy.evaluation.operating_point import (
        choose_operating_point,
        file_sha256,
        write_operating_point,
    )

    run = tmp_path / "evaluated_run"
    shutil.copytree(tiny_run, run)
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 10)
    probs = np.clip(0.45 + 0.2 * labels + rng.normal(0, 0.15, labels.size), 0.01, 0.99)
    rows = "".join(
        f"sub-{i:02d},{i % 2},{p!r},{y},s,site\n" for i, (p, y) in enumerate(zip(probs, labels, strict=True))
    )
    (run / "oof_predictions.csv").write_text("subject,fold,probability,label,scanner,site\n" + rows)
    op = choose_operating_point(
        labels,
        probs,
        "specificity:0.8",
        validation_mode="final",
        calibrate=calibrate,
        n_resamples=200,
        oof_sha256=file_sha256(run / "oof_predictions.csv"),
    )
    write_operating_point(run, op)
    return run


def test_never_evaluated_run_needs_an_explicit_threshold(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="never evaluated.*--threshold"):
        export_run(tiny_run, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_export_ships_the_oof_operating_point(tiny_run, tmp_path):
    run = _evaluated_run(tiny_run, tmp_path, calibrate=True)
    op = json.loads((run / "operating_point.json").read_text())
    assert op["method"] == "specificity>=0.80" and op["specificity"]["value"] >= 0.8 and op["temperature"]
    repo = tmp_path / "repo"
    result = export_run(run, repo)
    card = json.loads((repo / contract.ENSEMBLE_MODEL / "1" / "metadata.json").read_text())
    assert card["threshold"] == op["threshold"] != 0.5 and card["operating_point"] == op
    assert "Operating point" in (repo / contract.ENSEMBLE_MODEL / "1" / "README.md").read_text()
    cfg = parse_config(repo / contract.ENSEMBLE_MODEL / "configs" / "local.pbtxt")
    assert float(cfg.parameters[contract.PARAM_THRESHOLD].string_value) == op["threshold"]
    assert json.loads(cfg.parameters[contract.PARAM_OPERATING_POINT].string_value) == op
    assert result.parity_max_abs_diff < 1e-4  # the temperature is inside the graph, parity-checked
    # the graph applies the temperature to every fold's logit: compare with the fold models by hand
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(1).uniform(0, 3, (1, 1, *SHAPE)).astype(np.float32)
    sess = ort.InferenceSession(str(repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx"))
    prob, folds, _ = sess.run(None, {"suv": x})
    with torch.no_grad():
        logits = [float(m(torch.from_numpy(x))) for m in RunDir(run).load_fold_models()]
    expected = [1 / (1 + np.exp(-z / op["temperature"])) for z in logits]
    np.testing.assert_allclose(folds[0], expected, atol=1e-5)
    np.testing.assert_allclose(prob[0, 0], np.mean(expected), atol=1e-5)


def test_stale_operating_point_is_refused(tiny_run, tmp_path):
    run = _evaluated_run(tiny_run, tmp_path)
    with open(run / "oof_predictions.csv", "a") as fh:  # retrained since the evaluation
        fh.write("sub-99,0,0.5,1,s,site\n")
    with pytest.raises(ModelError, match="other out-of-fold predictions"):
        export_run(run, tmp_path / "repo")


@pytest.mark.parametrize("target", ["config.pbtxt", "configs/local.pbtxt"])
@pytest.mark.parametrize("param", ["threshold", "preprocessing", "operating_point"])
def test_edited_decision_parameters_are_refused(tiny_repository, tmp_path, target, param, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    path = repo / contract.ENSEMBLE_MODEL / target
    cfg = parse_config(path)
    key = {
        "threshold": contract.PARAM_THRESHOLD,
        "preprocessing": contract.PARAM_PREPROCESSING,
        "operating_point": contract.PARAM_OPERATING_POINT,
    }[param]
    value = cfg.parameters[key].string_value
    if param == "threshold":
        edited = "0.2"
    else:
        doc = json.loads(value)
        doc["threshold" if param == "operating_point" else "tbr_scale"] = 0.2
        edited = json.dumps(doc, sort_keys=True)
    cfg.parameters[key].string_value = edited
    path.write_text(config_text(cfg))
    with pytest.raises(ModelError, match=f"{key}.*differs from version 1"):
        verify_repository(repo)
    for command in ("verify", "serve"):  # serve verifies before starting Triton: never served
        code, err = _exit_code([command, str(repo)], capsys)
        assert code != 0 and "differs from version 1" in err and "Traceback" not in err


def test_export_refuses_a_decision_flip_and_publishes_nothing(
    tiny_run, tiny_repository, ensemble, scans, tmp_path, monkeypatch, capsys
):
    """A constructed flip: an FP16 graph (within its 2e-2 tolerance of PyTorch) and a threshold placed
    between its probability and PyTorch's on one parity scan. The export must fail with a clear
    message and leave the existing repository byte for byte as it was."""
    import onnxruntime as ort

    from gliodeploy.export.reference import storable

    x = storable(scans)
    export_onnx(ensemble, tmp_path / "half.onnx", input_shape=SHAPE, parity_inputs=x, fp16=True)
    sess = ort.InferenceSession(str(tmp_path / "half.onnx"), providers=["CPUExecutionProvider"])
    p_half = float(sess.run(["probability"], {"suv": x})[0][0, 0])
    p_torch = float(torch_outputs(ensemble, x)["probability"][0, 0])
    assert p_half != p_torch
    threshold = (p_half + p_torch) / 2

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.relative_to(repo): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}
    profile = tmp_path / "fp16.toml"
    profile.write_text("fp16 = true\n")
    monkeypatch.setattr("gliodeploy.export.pipeline.synthetic_parity_inputs", lambda cfg: x)
    argv = ["export", str(tiny_run), "--out", str(repo), "--profile", str(profile)]
    code, err = _exit_code([*argv, "--threshold", repr(threshold)], capsys)
    assert code == ModelError.exit_code and err.startswith("error: ") and "Traceback" not in err
    assert "changes the decision at the operating point" in err and "scan 0: PyTorch" in err
    assert "nothing was published" in err
    after = {p.relative_to(repo): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir() if "staging" in p.name) == []
    # the same FP16 graph with the threshold away from its outputs exports fine
    code, err = _exit_code([*argv, "--threshold", "0.05"], capsys)
    assert code == 0, err
    card = json.loads((repo / contract.ENSEMBLE_MODEL / "2" / "metadata.json").read_text())
    assert card["parity"]["decision_threshold"] == 0.05 and card["reference_cases"]["tolerance"] == 2e-2
