"""LesionNet (registry name ``lesionnet``): build, forward, options, evidence map and Grad-CAM layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gliodeploy.errors import ConfigError
from gliodeploy.models import build_model, count_parameters
from gliodeploy.models.lesionnet import OUTSIDE, POOLINGS, Asymmetry
from gliodeploy.models.registry import model_info
from gliodeploy.preprocessing import PreprocessConfig
from gliodeploy.training.rundir import build_from_spec

TINY = PreprocessConfig.tiny(normalization="tbr")  # 32 x 32 x 21 at 8 mm
DEMO = PreprocessConfig.demo(normalization="tbr")  # 64 x 64 x 41 at 4 mm


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


def _brain(shape: tuple[int, int, int], radius: float = 0.8) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return (grid.pow(2).sum(0) < radius).float()


def _input(cfg: PreprocessConfig, batch: int = 2) -> torch.Tensor:
    """Brain-masked-SUV-like input: positive inside a ball, zero outside."""
    return (0.5 + torch.rand(batch, 1, *cfg.shape) * 2.0) * _brain(cfg.shape)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_forward_gives_one_finite_logit_per_volume(pooling: str) -> None:
    model = build_model("lesionnet", preprocessing=TINY, pooling=pooling).eval()
    with torch.no_grad():
        out = model(_input(TINY, 3))
    assert out.shape == (3, 1) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.head_kind == "logit"
    assert model.spec["kwargs"] == {"pooling": pooling}
    # Exportable/explainable: no adaptive pooling, no in-place activation, BN convs without bias.
    assert not any(isinstance(m, nn.AdaptiveAvgPool3d) for m in model.modules())
    assert not any(getattr(m, "inplace", False) is True for m in model.modules())
    convs = [m for m in model.backbone.levels.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(c.bias is None for c in convs)


def test_default_size_and_options() -> None:
    model = build_model("lesionnet", preprocessing=DEMO)
    # Convolutions only: the count does not depend on the grid (8/16/32 channels, 2 input channels).
    assert count_parameters(model) == 53_298  # ... + the evidence prior's gain
    assert count_parameters(build_model("lesionnet", preprocessing=TINY)) == 53_298
    assert [m.out_channels for m in model.backbone.levels.modules() if isinstance(m, nn.Conv3d)] == [
        8,
        16,
        16,
        32,
        32,
    ]
    assert isinstance(model.backbone.asymmetry, Asymmetry)
    # Millimetre options follow the grid's spacing: +-12 mm tolerance, +-4 mm smoothing.
    assert model.backbone.asymmetry.window == (7, 7, 7) and model.backbone.asymmetry.smooth == (3, 3, 3)
    assert model.backbone.asymmetry.peak_smooth == (3, 3, 3)  # the original: both sides smoothed
    peak = build_model("lesionnet", preprocessing=DEMO, asymmetry_peak_smoothing_mm=0.0)
    assert count_parameters(peak) == 53_298  # the asymmetry has no parameters
    assert peak.backbone.asymmetry.peak_smooth == (1, 1, 1) and peak.backbone.asymmetry.smooth == (3, 3, 3)
    ratio = build_model("lesionnet", preprocessing=DEMO, asymmetry_mode="ratio")
    assert count_parameters(ratio) == 53_298  # a ratio instead of a difference: still no parameters
    assert ratio.backbone.asymmetry.mode == "ratio" and ratio.backbone.asymmetry.floor == 0.25
    contrast = build_model(
        "lesionnet", preprocessing=DEMO, asymmetry_mode="ratio", asymmetry_contrast_gamma=0.5
    ).backbone
    assert count_parameters(contrast) == 53_298  # the partial-volume term has no parameters either
    assert contrast.asymmetry.contrast_gamma == 0.5 and contrast.asymmetry.contrast_window == (3, 3, 3)
    assert contrast.evidence.gain.item() == pytest.approx(3.5)  # its own fitted prior start
    assert "partial-volume" in contrast.prior_description
    assert model.backbone.asymmetry.mode == "difference"  # the default is unchanged
    assert model.backbone.asymmetry.contrast_gamma == 0.0 and model.backbone.asymmetry.plane is None
    plane = build_model("lesionnet", preprocessing=DEMO, asymmetry_mirror="midsagittal").backbone
    assert count_parameters(plane) == 53_298  # the plane is estimated, not learned
    assert plane.asymmetry.plane is not None and plane.asymmetry.spacing == (4.0, 4.0, 4.0)
    tiny = build_model("lesionnet", preprocessing=TINY).backbone.asymmetry
    assert tiny.window == (5, 5, 5) and tiny.smooth == (1, 1, 1)  # 8 mm voxels: +-16 mm, none
    assert next(iter(model.children())) is model.normalization
    info = model_info("lesionnet")
    assert info["supports_width"] is True
    assert info["options"] == [
        "channels",
        "asymmetry",
        "asymmetry_tolerance_mm",
        "asymmetry_smoothing_mm",
        "asymmetry_peak_smoothing_mm",
        "asymmetry_mode",
        "asymmetry_ratio_floor",
        "asymmetry_contrast_gamma",
        "asymmetry_contrast_mm",
        "asymmetry_mirror",
        "evidence_prior",
        "pooling",
        "evidence_level",
        "hidden",
        "dropout",
        "lse_r",
    ]
    half = build_model("lesionnet", preprocessing=TINY, width="half", asymmetry=False, evidence_prior=False)
    assert [m.out_channels for m in half.backbone.levels.modules() if isinstance(m, nn.Conv3d)][0] == 4
    assert half.backbone.levels[0][0].in_channels == 1  # no asymmetry channel


def test_tbr_normalisation_makes_the_model_blind_to_the_suv_scale() -> None:
    model = build_model("lesionnet", preprocessing=TINY).eval()
    x = _input(TINY)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(2.5 * x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"poolng": "max"},
            "no option(s) poolng; valid options: channels, asymmetry, asymmetry_tolerance_mm",
        ),
        ({"pooling": "avg"}, "pooling must be one of max, lse, attention, mean"),
        ({"channels": [8]}, "channels must be 2-5 positive integers"),
        ({"channels": [8, 0, 16]}, "channels must be 2-5 positive integers"),
        ({"channels": "8,16"}, "channels must be 2-5 positive integers"),
        ({"channels": [8, 16], "width": "half"}, "either width or channels"),
        ({"asymmetry": "yes"}, "asymmetry must be true or false"),
        ({"asymmetry": False}, "evidence_prior needs asymmetry = true"),
        ({"evidence_prior": 1}, "evidence_prior must be true or false"),
        ({"asymmetry_tolerance_mm": -1.0}, "asymmetry_tolerance_mm must be a distance in [0, 50] mm"),
        ({"asymmetry_smoothing_mm": "4"}, "asymmetry_smoothing_mm must be a distance in [0, 50] mm"),
        (
            {"asymmetry_peak_smoothing_mm": -2.0},
            "asymmetry_peak_smoothing_mm must be a distance in [0, 50] mm",
        ),
        ({"asymmetry_mode": "quotient"}, "asymmetry_mode must be one of difference, ratio"),
        ({"asymmetry_ratio_floor": 0.0}, "asymmetry_ratio_floor must be in (0, 10]"),
        ({"asymmetry_ratio_floor": True}, "asymmetry_ratio_floor must be in (0, 10]"),
        ({"asymmetry_contrast_gamma": 0.5}, 'asymmetry_contrast_gamma needs asymmetry_mode = "ratio"'),
        (
            {"asymmetry_mode": "ratio", "asymmetry_contrast_gamma": -0.5},
            "asymmetry_contrast_gamma must be in [0, 2]",
        ),
        (
            {"asymmetry_mode": "ratio", "asymmetry_contrast_gamma": "0.5"},
            "asymmetry_contrast_gamma must be in [0, 2]",
        ),
        ({"asymmetry_contrast_mm": 60.0}, "asymmetry_contrast_mm must be a distance in [0, 50] mm"),
        ({"asymmetry_mirror": "atlas"}, "asymmetry_mirror must be one of grid, midsagittal"),
        ({"spacing": [1, 1, 1]}, "no option(s) spacing"),
        ({"evidence_level": 3}, "evidence_level must be in 0..2"),
        ({"evidence_level": True}, "evidence_level must be an integer"),
        ({"hidden": 0}, "hidden must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"lse_r": 0}, "lse_r must be in (0, 100]"),
        ({"fc_width": 64}, "fc_width does not apply"),
        ({"pretrained_path": "x.pth"}, "only acs_resnet18"),
        ({"width": "tiny"}, "unknown width 'tiny'"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("lesionnet", preprocessing=TINY, **kwargs)
    assert message in str(exc.value)


def test_poolings_stop_at_one_voxel_on_small_grids() -> None:
    cfg = PreprocessConfig.tiny(shape=(8, 6, 4), normalization="tbr")
    model = build_model("lesionnet", preprocessing=cfg, channels=[4, 4, 4, 4]).eval()
    assert model.backbone.sizes == [(8, 6, 4), (4, 3, 2), (2, 1, 1), (1, 1, 1)]
    with torch.no_grad():
        assert torch.isfinite(model(_input(cfg))).all()


@pytest.mark.parametrize(("cfg", "size"), [(DEMO, (32, 32, 20)), (TINY, (16, 16, 10))])
def test_gradcam_layer_is_the_high_resolution_evidence_map(cfg: PreprocessConfig, size: tuple) -> None:
    """The explained layer is one channel at twice the input spacing (8 mm on the 4 mm demo grid)."""
    model = build_model("lesionnet", preprocessing=cfg).eval()
    assert model.gradcam_layer == "backbone.evidence" == model_info("lesionnet")["gradcam_layer"]
    layer = dict(model.named_modules())[model.gradcam_layer]
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    handle = layer.register_forward_hook(keep)
    model(_input(cfg, 1)).sum().backward()
    handle.remove()
    (fmap,) = captured
    assert tuple(fmap.shape) == (1, 1, *size)
    spacing = np.asarray(cfg.spacing) * np.asarray(cfg.shape) / np.asarray(size)
    assert spacing.max() <= 2.2 * max(cfg.spacing)  # 8.0-8.2 mm on the demo grid
    # The map is positive (exp of the evidence) and its gradient weight is positive, so Grad-CAM
    # never returns an empty map.
    assert (fmap > 0).all() and fmap.grad is not None and fmap.grad.sum() > 0


def test_evidence_is_masked_outside_the_brain_and_max_pooled() -> None:
    model = build_model("lesionnet", preprocessing=TINY).eval()
    x = _input(TINY, 2)
    with torch.no_grad():
        e = model.backbone.evidence_map(model.normalization(x))
        logit = model(x)
    assert e.shape == (2, 1, 16, 16, 10)
    corner = e[:, :, 0, 0, 0]  # the field-of-view corner is outside the brain ball
    torch.testing.assert_close(corner, torch.full_like(corner, OUTSIDE))
    inside = e > OUTSIDE + 1
    assert inside.float().mean() > 0.2
    torch.testing.assert_close(logit, e.flatten(1).amax(dim=1, keepdim=True))


def test_asymmetry_channel_cancels_a_symmetric_structure() -> None:
    x = torch.rand(2, 1, 8, 6, 5)
    sym = x + torch.flip(x, dims=(2,))  # left-right symmetric (axis x of [B, C, X, Y, Z])
    out = Asymmetry()(sym)
    assert out.shape == (2, 2, 8, 6, 5)
    torch.testing.assert_close(out[:, :1], sym)
    assert out[:, 1].abs().max() < 1e-6
    lesion = sym.clone()
    lesion[:, :, 1, 2, 2] += 3.0  # a unilateral focus survives, with opposite signs on both sides
    diff = Asymmetry()(lesion)[:, 1]
    assert torch.allclose(diff[:, 1, 2, 2], torch.full((2,), 3.0))
    assert torch.allclose(diff[:, 6, 2, 2], torch.full((2,), -3.0))


def test_tolerant_asymmetry_cancels_a_shifted_symmetric_structure() -> None:
    """A bilateral structure one voxel off the mirror position (head not centred) cancels only with
    a tolerance window; a unilateral focus stays positive either way."""
    x = torch.zeros(1, 1, 16, 8, 8)
    x[:, :, 3, 4, 4] = x[:, :, 13, 4, 4] = 2.0  # mirror of index 3 is 12: shifted by one voxel
    plain = Asymmetry()(x)[:, 1]
    tolerant = Asymmetry(window=(3, 3, 3))(x)[:, 1]
    assert plain.max() == 2.0
    assert tolerant.max() <= 0.0
    x[:, :, 6, 2, 2] = 3.0  # a unilateral focus
    assert Asymmetry(window=(3, 3, 3))(x)[:, 1, 6, 2, 2].item() == 3.0


def test_unsmoothed_lesion_side_keeps_a_small_focus_peak() -> None:
    """Smoothing both sides averages a one-voxel focus away (3.0 -> 3/27 above background); smoothing
    only the mirror side keeps its full height, while a bilateral structure still cancels."""
    x = torch.ones(1, 1, 16, 12, 12)
    x[:, :, 3:6, 3:6, 3:6] = x[:, :, 10:13, 3:6, 3:6] = 2.0  # bilateral, exactly mirrored
    x[:, :, 2, 9, 9] = 4.0  # a one-voxel focus, far from its mirror position (13, 9, 9)
    both = Asymmetry(window=(3, 3, 3), smooth=(3, 3, 3))(x)[0, 1]
    peak = Asymmetry(window=(3, 3, 3), smooth=(3, 3, 3), peak_smooth=(1, 1, 1))(x)[0, 1]
    assert both[2, 9, 9].item() < 0.2
    assert peak[2, 9, 9].item() == pytest.approx(3.0)  # 4.0 - the mirror side's (healthy) 1.0
    assert peak[4, 4, 4].item() <= 0.0 and peak[11, 4, 4].item() <= 0.0  # the bilateral block cancels


def test_ratio_asymmetry_is_uptake_over_contralateral_floored_at_healthy_brain() -> None:
    """The ratio mode: a focus over its mirror side's uptake (a tumour-to-contralateral ratio), never
    over less than the floor; a bilateral structure gives 1 (no asymmetry), not 0."""
    x = torch.full((1, 1, 16, 12, 12), 0.25)  # healthy brain at the "tbr" input's level
    x[:, :, 3:6, 3:6, 3:6] = x[:, :, 10:13, 3:6, 3:6] = 0.75  # bilateral, exactly mirrored
    x[:, :, 2, 9, 9] = 0.75  # a one-voxel focus 3x healthy, facing healthy brain
    x[:, :, 13, 9, 2] = 0.05  # a cold spot (a ventricle)
    out = Asymmetry(window=(3, 3, 3), mode="ratio", floor=0.25)(x)
    torch.testing.assert_close(out[:, :1], x)
    ratio = out[0, 1]
    assert ratio[2, 9, 9].item() == pytest.approx(3.0)
    assert ratio[4, 4, 4].item() == pytest.approx(1.0) and ratio[11, 4, 4].item() == pytest.approx(1.0)
    assert ratio.max().item() == pytest.approx(3.0)
    # Facing the cold spot, healthy brain is divided by the floor (1.0), not by 0.05 (5.0).
    plain = Asymmetry(mode="ratio", floor=0.25)(x)[0, 1]
    assert plain[2, 9, 2].item() == pytest.approx(1.0)
    assert Asymmetry(mode="ratio", floor=0.01)(x)[0, 1, 2, 9, 2].item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="asymmetry mode"):
        Asymmetry(mode="quotient")


def test_contrast_term_reads_a_small_focus_higher_than_a_large_one_of_the_same_peak() -> None:
    """The partial-volume term: the ratio times (uptake / brain mean of the 3x3x3 box) ** gamma. A blurred
    small focus has its peak far above its neighbourhood, a large one does not; healthy brain, the brain's
    edge (the mean is over brain voxels only) and a large focus's centre keep their ratio."""
    x = torch.zeros((1, 1, 16, 12, 12))
    x[:, :, 1:15, 1:11, 1:11] = 0.25  # healthy brain at the "tbr" input's level, zero outside
    x[:, :, 3, 8, 8] = 0.75  # a one-voxel focus 3x healthy, facing healthy brain
    x[:, :, 9:12, 2:5, 2:5] = 0.75  # a 3x3x3 focus of the same peak, facing healthy brain
    plain = Asymmetry(window=(3, 3, 3), mode="ratio", floor=0.25)(x)[0, 1]
    pv = Asymmetry(window=(3, 3, 3), mode="ratio", floor=0.25, contrast_gamma=0.5)(x)[0, 1]
    assert plain[3, 8, 8].item() == pytest.approx(3.0) and plain[10, 3, 3].item() == pytest.approx(3.0)
    mean = (26 * 0.25 + 0.75) / 27
    assert pv[3, 8, 8].item() == pytest.approx(3.0 * (0.75 / mean) ** 0.5, rel=1e-5)  # small: read higher
    assert pv[10, 3, 3].item() == pytest.approx(3.0)  # the large focus's centre: its own mean
    assert pv[7, 6, 6].item() == pytest.approx(1.0) and pv[1, 1, 1].item() == pytest.approx(1.0)
    assert pv[0, 0, 0].item() == 0.0 and torch.isfinite(pv).all()  # outside the brain: 0, never NaN
    with pytest.raises(ValueError, match="needs the ratio mode"):
        Asymmetry(contrast_gamma=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"asymmetry_mode": "ratio", "asymmetry_tolerance_mm": 8.0},
        {"asymmetry_mode": "ratio", "asymmetry_ratio_floor": 0.3, "asymmetry_contrast_gamma": 0.5},
        {
            "asymmetry_mode": "ratio",
            "asymmetry_ratio_floor": 0.3,
            "asymmetry_contrast_gamma": 0.5,
            "asymmetry_mirror": "midsagittal",
        },
    ],
)
def test_untrained_model_scores_a_unilateral_focus_above_a_bilateral_one(kwargs: dict) -> None:
    """The evidence prior: before any training the logit grows with the asymmetric uptake."""
    model = build_model("lesionnet", preprocessing=DEMO, **kwargs).eval()
    base = _brain(DEMO.shape)[None, None] * 1.2
    bilateral, unilateral = base.clone(), base.clone()
    bilateral[:, :, 22:26, 30:34, 18:22] = bilateral[:, :, 38:42, 30:34, 18:22] = 3.0  # striatum-like
    unilateral[:, :, 22:26, 30:34, 18:22] = 3.0
    unilateral[:, :, 38:42, 30:34, 18:22] = 1.2
    with torch.no_grad():
        logits = model(torch.cat([base, bilateral, unilateral]))[:, 0]
    assert logits[2] > logits[1] + 1.0 and logits[2] > logits[0] + 1.0


def test_gradcam_on_a_volume_is_finite_and_inside_the_brain() -> None:
    pytest.importorskip("medcam")
    from gliodeploy.explain.gradcam import attention_inside, gradcam

    model = build_model("lesionnet", preprocessing=TINY).eval()
    volume = _input(TINY, 1)[0, 0].numpy()
    cam, prob = gradcam(model, volume)
    assert cam.shape == TINY.shape and np.isfinite(cam).all() and cam.max() > 0
    assert 0.0 < prob < 1.0
    assert attention_inside(cam, (volume > 0).astype(np.uint8)) > 0.8


def test_spec_round_trip_rebuilds_identical_model() -> None:
    a = build_model("lesionnet", preprocessing=TINY, channels=[4, 8, 8], pooling="lse").eval()
    with torch.no_grad():  # move off the initialisation so the comparison means something
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    spec = {"name": "lesionnet", "width": None, "kwargs": {"channels": [4, 8, 8], "pooling": "lse"}}
    b = build_from_spec(spec, TINY).eval()
    b.load_state_dict(a.state_dict())
    x = _input(TINY)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
