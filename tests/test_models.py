"""Model registry: the study's parameter counts, one-logit outputs, reduced grids/widths, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gliodeploy.errors import ConfigError, InputError, ModelError
from gliodeploy.models import MODEL_NAMES, build_model, count_parameters
from gliodeploy.models.layers import GlobalAvgPool3d
from gliodeploy.models.registry import STUDY_MODEL_NAMES, STUDY_PARAMETERS, model_info
from gliodeploy.preprocessing import PreprocessConfig

#: Parameter counts reported by the study (backbone, 1 x 1 x 128 x 128 x 82 input). ACS-ResNet18 is
#: "~11.17 M" in the study; 11,170,753 is timm's resnet18 with one input channel and one output.
STUDY = {
    "cnn3d": 5_414_081,
    "vgg11": 27_658_497,
    "resnet10": 14_356_929,
    "acs_resnet18": 11_170_753,
    "senet": 159_671_426,
    "squeezenet": 1_861_186,
}
TINY = PreprocessConfig.tiny()  # 32 x 32 x 21


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


def _tiny_input(batch: int = 2) -> torch.Tensor:
    """Brain-masked-SUV-like input: positive values inside a ball, zero outside."""
    x = torch.rand(batch, 1, *TINY.shape) * 3.0
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in TINY.shape], indexing="ij"))
    return x * (grid.pow(2).sum(0) < 0.8).float()


def test_registry_names_the_six_study_architectures() -> None:
    assert set(STUDY_MODEL_NAMES) == set(STUDY)
    assert STUDY_PARAMETERS == STUDY
    # Improved variants come after the study's six and carry no study parameter count.
    assert list(MODEL_NAMES) == [*STUDY_MODEL_NAMES, "lesionnet"]
    assert model_info("lesionnet")["study_parameters"] is None


@pytest.mark.parametrize("name", sorted(STUDY))
def test_study_parameter_counts(name: str) -> None:
    model = build_model(name)  # the study grid 128 x 128 x 82
    assert count_parameters(model) == STUDY[name]
    assert count_parameters(model.normalization) == 0
    assert model.grid == (128, 128, 82)


@pytest.mark.parametrize("name", sorted(STUDY))
def test_forward_on_tiny_grid_gives_one_finite_logit(name: str) -> None:
    model = build_model(name, preprocessing=TINY).eval()
    with torch.no_grad():
        out = model(_tiny_input())
    assert out.shape == (2, 1)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.head_kind == ("two_class" if name in ("senet", "squeezenet") else "logit")
    # Exportable/explainable: no adaptive pooling, no in-place activation anywhere.
    assert not any(isinstance(m, nn.AdaptiveAvgPool3d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) is True for m in model.modules())
    # The Grad-CAM layer is a real module whose output carries gradient from the logit.
    layer = dict(model.named_modules())[model.gradcam_layer]
    assert model.gradcam_layer == model_info(name)["gradcam_layer"]
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    handle = layer.register_forward_hook(keep)
    model(_tiny_input(1)).sum().backward()
    handle.remove()
    assert captured[0].dim() == 5 and captured[0].grad is not None
    assert captured[0].grad.abs().sum() > 0


def test_two_class_head_maps_to_logit_difference() -> None:
    model = build_model("squeezenet", preprocessing=TINY).eval()
    x = _tiny_input()
    with torch.no_grad():
        z = model.backbone(model.normalization(x))
        logit = model(x)
    assert z.shape == (2, 2)
    assert torch.equal(logit, z[:, 1:2] - z[:, 0:1])
    torch.testing.assert_close(torch.sigmoid(logit)[:, 0], torch.softmax(z, dim=1)[:, 1], rtol=0, atol=1e-6)


def test_normalization_is_the_first_layer() -> None:
    # minmax normalisation in the graph: a model is blind to a global SUV scale factor.
    model = build_model("cnn3d", preprocessing=TINY).eval()
    x = _tiny_input()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(2.5 * x), rtol=1e-4, atol=1e-5)
    assert next(iter(model.children())) is model.normalization


def _cnn3d_params(filters: list[int], fc_in_voxels: int, fc: int) -> int:
    convs, c_in = 0, 1
    for c in filters:
        convs += c_in * c * 27 + c
        c_in = c
    return convs + (c_in * fc_in_voxels * fc + fc) + (fc + 1)


@pytest.mark.parametrize(
    ("width", "filters", "fc"),
    [("full", [64, 64, 128, 256], 512), ("half", [32, 32, 64, 128], 256), ("quarter", [16, 16, 32, 64], 128)],
)
def test_cnn3d_width_variants(width: str, filters: list[int], fc: int) -> None:
    model = build_model("cnn3d", width=width)
    assert count_parameters(model) == _cnn3d_params(filters, 4 * 4 * 2, fc)
    assert model.spec["width"] == width


def test_cnn3d_fc_input_follows_the_grid_and_fc_width() -> None:
    # 128x128x82 -> 8x8x5 -> 4x4x2; 64x64x41 -> 4x4x2 -> 2x2x1; 32x32x21 -> 2x2x1 -> 1x1x1.
    for cfg, voxels in [(PreprocessConfig.demo(), 4), (TINY, 1)]:
        model = build_model("cnn3d", preprocessing=cfg, fc_width=64)
        first_fc = model.backbone.classifier[1]
        assert (first_fc.in_features, first_fc.out_features) == (256 * voxels, 64)
        assert count_parameters(model) == _cnn3d_params([64, 64, 128, 256], voxels, 64)


def test_vgg11_half_width_scales_filters() -> None:
    model = build_model("vgg11", preprocessing=TINY, width=0.5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128, 256, 256, 256, 256]
    assert model.backbone.classifier.in_features == 256
    assert isinstance(model.backbone.pool, GlobalAvgPool3d)


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("densenet")
    for name in MODEL_NAMES:
        assert name in str(exc.value)
    assert "densenet" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet10", {"width": "half"}, "reduced-width"),
        ("senet", {"fc_width": 128}, "reduced-width"),
        ("cnn3d", {"width": "tiny"}, "unknown width 'tiny'"),
        ("cnn3d", {"width": 0}, "width must be"),
        ("cnn3d", {"fc_width": 0}, "fc_width must be a positive integer"),
        ("vgg11", {"fc_width": 128}, "fc_width does not apply"),
        ("cnn3d", {"dropuot": 0.3}, "no option(s) dropuot; valid options: dropout"),
        ("cnn3d", {"pretrained_path": "x.pth"}, "only acs_resnet18"),
        ("senet", {"reductoin": 8}, "no option(s) reductoin; valid options: block, layers, groups"),
        ("resnet10", {"pretrained": True}, "no option(s) pretrained"),
        ("senet", {"num_classes": 3}, "no option(s) num_classes"),
    ],
)
def test_bad_options_raise_config_error(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_model(name, preprocessing=TINY, **kwargs)
    assert message in str(exc.value)


def test_grid_too_small_for_architecture() -> None:
    cfg = PreprocessConfig.tiny(shape=(12, 12, 12))
    for name in ("cnn3d", "squeezenet"):
        with pytest.raises(ConfigError, match="too small"):
            build_model(name, preprocessing=cfg)


def test_wrong_input_shape_raises_input_error() -> None:
    model = build_model("squeezenet", preprocessing=TINY)
    with pytest.raises(InputError, match=r"\[B, 1, 32, 32, 21\].*\[2, 1, 32, 32, 20\]"):
        model(torch.zeros(2, 1, 32, 32, 20))
    with pytest.raises(InputError, match="got shape"):
        model(torch.zeros(1, 32, 32, 21))


def test_missing_pretrained_file_raises_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        build_model("acs_resnet18", preprocessing=TINY, pretrained_path=tmp_path / "nope.pth")


def test_state_dict_round_trip_rebuilds_identical_model() -> None:
    a = build_model("cnn3d", preprocessing=TINY, width="quarter").eval()
    torch.manual_seed(123)
    b = build_model("cnn3d", preprocessing=TINY, width="quarter").eval()
    x = _tiny_input()
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_library_options_reach_the_library_model() -> None:
    model = build_model("resnet10", preprocessing=TINY, conv1_t_stride=2)
    assert model.backbone.conv1.stride == (2, 2, 2)
    assert model.spec["kwargs"] == {"conv1_t_stride": 2}
    model = build_model("cnn3d", preprocessing=TINY, dropout=0.2)
    assert model.backbone.classifier[3].p == 0.2
