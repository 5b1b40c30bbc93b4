"""A registry model exports to ONNX with a dynamic batch and ONNX Runtime matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliodeploy.models import build_model
from gliodeploy.preprocessing import PreprocessConfig

TINY = PreprocessConfig.tiny()


@pytest.mark.parametrize("name", ["cnn3d", "squeezenet"])
def test_onnx_export_dynamic_batch_matches_onnxruntime(tmp_path, name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(name, preprocessing=TINY, **({"width": "quarter"} if name == "cnn3d" else {})).eval()
    example = torch.rand(2, 1, *TINY.shape) * 3.0
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["suv"],
        output_names=["logit"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):  # batch sizes other than the export example's
        x = torch.rand(n, 1, *TINY.shape) * 3.0
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["logit"], {"suv": x.numpy()})
        assert got.shape == (n, 1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("pooling", "kwargs"),
    [
        ("max", {}),
        ("lse", {}),
        ("attention", {}),
        # the unsmoothed lesion side beside a smoothed mirror side (3-voxel box at 8 mm)
        ("max", {"asymmetry_smoothing_mm": 8.0, "asymmetry_peak_smoothing_mm": 0.0}),
        # the ratio asymmetry (the demo's): a division by the floored mirrored side
        (
            "max",
            {"asymmetry_mode": "ratio", "asymmetry_smoothing_mm": 0.0, "asymmetry_peak_smoothing_mm": 0.0},
        ),
        # with the partial-volume contrast term (a power of uptake over its brain-only local mean)
        ("max", {"asymmetry_mode": "ratio", "asymmetry_contrast_gamma": 0.5, "asymmetry_contrast_mm": 8.0}),
        # the demo's: the mirror about the mid-sagittal plane estimated in the graph (gathers, argmax)
        (
            "max",
            {
                "asymmetry_mode": "ratio",
                "asymmetry_ratio_floor": 0.3,
                "asymmetry_contrast_gamma": 0.5,
                "asymmetry_mirror": "midsagittal",
            },
        ),
    ],
)
def test_lesionnet_onnx_export_dynamic_batch_matches_onnxruntime(
    tmp_path, pooling: str, kwargs: dict
) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cfg = PreprocessConfig.tiny(normalization="tbr")
    model = build_model("lesionnet", preprocessing=cfg, pooling=pooling, **kwargs).eval()
    ball = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in cfg.shape], indexing="ij"))
    ball = (ball.pow(2).sum(0) < 0.8).float()  # brain-masked input: zero outside (the evidence mask)
    path = tmp_path / "lesionnet.onnx"
    torch.onnx.export(
        model,
        (torch.rand(2, 1, *cfg.shape) * ball,),
        str(path),
        input_names=["suv"],
        output_names=["logit"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = (0.5 + torch.rand(n, 1, *cfg.shape) * 3.0) * ball
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["logit"], {"suv": x.numpy()})
        assert got.shape == (n, 1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_lesionnet_fold_ensemble_exports_through_the_project_path(tmp_path) -> None:
    """``gliodeploy export``'s path: the fold ensemble graph, parity-checked in ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.onnx_export import export_onnx

    cfg = PreprocessConfig.tiny(normalization="tbr")
    torch.manual_seed(1)
    folds = [build_model("lesionnet", preprocessing=cfg).eval() for _ in range(2)]
    rng = np.random.default_rng(0)
    ball = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in cfg.shape], indexing="ij"))
    ball = ((ball**2).sum(0) < 0.8).astype(np.float32)
    # Brain-like uptake (SUV ~1-1.4 in a ball): heavy-tailed noise would saturate the untrained
    # asymmetry prior, where the ensemble's float32 logit output is ill-conditioned (p -> 1).
    inputs = ((1.0 + 0.4 * rng.random(size=(3, 1, *cfg.shape))) * ball).astype(np.float32)
    report = export_onnx(
        EnsembleModule(folds), tmp_path / "model.onnx", input_shape=cfg.shape, parity_inputs=inputs
    )
    assert report.max_abs_diff <= 1e-4
    assert (tmp_path / "model.onnx").is_file()


def test_ensemble_computes_the_folds_shared_input_stage_once() -> None:
    """Folds with the same options share the parameter-free stage (normalisation, asymmetry, mid-sagittal
    plane): the ensemble computes it once and gives exactly what each fold gives on its own; folds with
    different options each keep their own."""
    from gliodeploy.export.ensemble import EnsembleModule

    cfg = PreprocessConfig.tiny(normalization="tbr")
    options = {"asymmetry_mode": "ratio", "asymmetry_contrast_gamma": 0.5, "asymmetry_mirror": "midsagittal"}
    torch.manual_seed(2)
    folds = [build_model("lesionnet", preprocessing=cfg, **options).eval() for _ in range(3)]
    with torch.no_grad():  # folds that differ in their learned part only
        for fold in folds:
            for p in fold.parameters():
                p.add_(0.05 * torch.randn_like(p))
    ensemble = EnsembleModule(folds)
    assert ensemble.shared_prepare
    ball = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in cfg.shape], indexing="ij"))
    x = (1.0 + torch.rand(2, 1, *cfg.shape)) * (ball.pow(2).sum(0) < 0.8).float()
    calls = []
    handle = folds[0].backbone.asymmetry.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        _, fold_prob, _ = ensemble(x)
        expected = torch.cat([torch.sigmoid(f(x)) for f in folds], dim=1)
    handle.remove()
    torch.testing.assert_close(fold_prob, expected)
    assert len(calls) == 2  # once for the ensemble, once for the reference call of fold 0 above
    mixed = [folds[0], build_model("lesionnet", preprocessing=cfg).eval()]
    assert not EnsembleModule(mixed).shared_prepare
    study = [build_model("cnn3d", preprocessing=cfg, width="quarter").eval() for _ in range(2)]
    assert not EnsembleModule(study).shared_prepare  # the study's models export as before
