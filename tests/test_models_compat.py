"""torch 2.13 compatibility fixes and ACS-ResNet18 weights from a local file (never downloaded)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gliodeploy.models import build_model, compat
from gliodeploy.preprocessing import PreprocessConfig

TINY = PreprocessConfig.tiny()


def test_timm_and_torchvision_import_after_apply_in_a_fresh_interpreter() -> None:
    code = (
        "import gliodeploy.models.compat as c; c.apply(); c.apply(); "
        "import timm, torchvision, torch; "
        "net = timm.create_model('resnet18', num_classes=1); "
        "print(hasattr(torch.ops.torchvision, 'nms'), net.fc.out_features)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1"]


def test_acs_converter_keeps_batchnorm_weights_and_bias_flag() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(6, affine=False),
    )
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
        net[1].running_mean.uniform_(-1, 1)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    converted = compat.acs_converter()(net).model
    assert type(converted[1]) is nn.BatchNorm3d and type(converted[4]) is nn.BatchNorm3d
    assert type(converted[3]) is nn.MaxPool3d
    assert converted[4].bias is None and converted[4].weight is None
    assert converted[0].bias is None
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    out = converted.eval()(torch.rand(2, 1, 8, 8, 6))
    assert out.shape == (2, 6, 4, 4, 3)


def test_import_acs_converter_is_silent(capfd: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m.startswith("acsconv.converters")]:
        del sys.modules[name]
    compat.import_acs_converter()
    assert capfd.readouterr().out == ""


def test_acs_resnet18_without_weights_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gliodeploy.models.acs_resnet18"):
        build_model("acs_resnet18", preprocessing=TINY)
    notices = [r.getMessage() for r in caplog.records if "random initialisation" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0]


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_acs_resnet18_loads_local_2d_weights(tmp_path, fmt: str, caplog: pytest.LogCaptureFixture) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    ref = timm.create_model("resnet18")  # RGB input, 1000 classes: an ImageNet-shaped checkpoint
    with torch.no_grad():
        for name, buf in ref.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-1, 1)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))

    torch.manual_seed(99)  # different from the checkpoint's seed: equality proves loading
    with caplog.at_level(logging.WARNING):
        model = build_model("acs_resnet18", preprocessing=TINY, pretrained_path=path)
    assert not [r for r in caplog.records if "random initialisation" in r.getMessage()]
    net = model.backbone
    assert torch.equal(net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(net.layer2[0].bn1.running_mean, state["layer2.0.bn1.running_mean"])
    # timm folds the RGB stem into one channel (sum) and leaves the new 1-output head untrained.
    stem = state["conv1.weight"].sum(1, keepdim=True)
    torch.testing.assert_close(net.conv1.weight, stem, rtol=1e-6, atol=1e-6)
    assert net.fc.weight.shape == (1, 512)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, *TINY.shape)).shape == (1, 1)
