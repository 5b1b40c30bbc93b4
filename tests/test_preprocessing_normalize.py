"""In-graph intensity normalisation: numpy twin parity, batch independence, ONNX export parity."""

from __future__ import annotations

import numpy as np
import pytest

from gliodeploy.errors import ConfigError, InputError
from gliodeploy.preprocessing import PreprocessConfig, normalize
from gliodeploy.preprocessing.intensity import tbr_reference

torch = pytest.importorskip("torch")
from gliodeploy.models.normalize import IntensityNormalization  # noqa: E402

SHAPE = (20, 18, 12)
CONFIGS = {
    "minmax": PreprocessConfig.tiny(),
    "suv_clip": PreprocessConfig.tiny(normalization="suv_clip", suv_max=3.0),
    "tbr_mean": PreprocessConfig.tiny(normalization="tbr", tbr_reference="mean"),
    "tbr_robust": PreprocessConfig.tiny(normalization="tbr", tbr_reference="robust"),
}


def masked_suv(seed: int, brain: float = 1.2) -> np.ndarray:
    """A masked SUV volume: an ellipsoid brain at ``brain`` SUV with a hot 'striatum', zeros outside."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"), -1)
    inside = (idx**2).sum(-1) < 0.8
    x = (brain + rng.normal(0, 0.1, SHAPE)) * inside
    x[8:11, 7:10, 5:8] = 4.0 + rng.random((3, 3, 3))
    return np.clip(x, 0, None).astype(np.float32)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_matches_numpy_per_sample(name: str) -> None:
    cfg = CONFIGS[name]
    batch = np.stack([masked_suv(0), masked_suv(1, brain=0.8), 2.5 * masked_suv(2)])[:, None]
    got = IntensityNormalization(cfg)(torch.from_numpy(batch)).numpy()
    want = np.stack([normalize(v[0], cfg) for v in batch])[:, None]
    assert got.shape == batch.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Per-sample statistics: a sample's output does not depend on its batch neighbours.
    alone = IntensityNormalization(cfg)(torch.from_numpy(batch[1:2])).numpy()
    np.testing.assert_allclose(alone[0], got[1], rtol=0, atol=1e-7)


def test_ranges_and_reference_values() -> None:
    x = masked_suv(0)
    for name in ("minmax", "suv_clip"):
        y = normalize(x, CONFIGS[name])
        assert y.min() >= 0 and y.max() <= 1
    assert normalize(x, CONFIGS["minmax"]).max() == pytest.approx(1.0)
    # suv_clip: SUV 1.5 with suv_max 3 -> 0.5; above suv_max saturates at 1.
    np.testing.assert_allclose(normalize(np.array([1.5, 6.0, 0.0]), CONFIGS["suv_clip"]), [0.5, 1.0, 0.0])
    # The robust reference ignores the hot striatum and lands on the healthy brain level (1.2).
    brain = x > 0
    robust = tbr_reference(x.astype(np.float64), brain, CONFIGS["tbr_robust"])
    mean = tbr_reference(x.astype(np.float64), brain, CONFIGS["tbr_mean"])
    assert robust == pytest.approx(1.2, abs=0.01)
    assert mean > robust + 0.02
    # tbr: healthy brain x scale -> 1 / tbr_scale.
    y = normalize(x, CONFIGS["tbr_robust"])
    assert np.median(y[brain & (x < 2)]) == pytest.approx(1 / 4.0, abs=0.01)


def test_degenerate_inputs_do_not_divide_by_zero() -> None:
    zeros = torch.zeros((2, 1, 4, 4, 4))
    for cfg in CONFIGS.values():
        out = IntensityNormalization(cfg)(zeros)
        assert torch.isfinite(out).all() and out.abs().max() == 0
        assert np.all(normalize(np.zeros((4, 4, 4)), cfg) == 0)


def test_bad_inputs_raise() -> None:
    with pytest.raises(InputError, match="NaN"):
        normalize(np.array([1.0, np.nan]), CONFIGS["minmax"])
    with pytest.raises(InputError, match="mask shape"):
        normalize(np.ones((3, 3, 3)), CONFIGS["tbr_mean"], mask=np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        IntensityNormalization(CONFIGS["minmax"])(torch.ones((4, 4, 4)))
    with pytest.raises(ConfigError, match="normalization"):
        PreprocessConfig(normalization="zscore")


def test_module_has_no_state_and_describes_itself() -> None:
    module = IntensityNormalization(CONFIGS["tbr_robust"])
    assert module.state_dict() == {}
    assert "tbr" in repr(module) and "robust" in repr(module)


@pytest.mark.parametrize("name", ["minmax", "tbr_robust"])
def test_onnx_export_matches_onnxruntime_with_dynamic_batch(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    cfg = CONFIGS[name]
    module = IntensityNormalization(cfg).eval()
    example = torch.from_numpy(np.stack([masked_suv(0), masked_suv(1)])[:, None])
    path = tmp_path / "normalize.onnx"
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["suv"],
        output_names=["normalized"],
        opset_version=18,
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.stack([masked_suv(3), 0.5 * masked_suv(4), masked_suv(5)])[:, None]  # another batch size
    (got,) = session.run(None, {"suv": batch})
    want = np.stack([normalize(v[0], cfg) for v in batch])[:, None]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
