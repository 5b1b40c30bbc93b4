"""ACS-ResNet18: timm's 2D ResNet-18 converted to 3D with ACS convolutions (11,170,753 parameters).

ACS convolutions split each 2D kernel's output channels over the axial, coronal and sagittal views,
so 2D ImageNet weights can initialise a 3D network. Weights come only from a local file
(``pretrained_path``); nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from gliodeploy.errors import ModelError
from gliodeploy.models import compat
from gliodeploy.models.layers import GlobalAvgPool3d, make_exportable

log = logging.getLogger(__name__)
compat.apply()  # importing this module makes `import timm` safe for callers too

GRADCAM_LAYER = "layer4"


def build_acs_resnet18(pretrained_path: str | Path | None = None, drop_rate: float = 0.0) -> nn.Module:
    """timm ``resnet18`` (1 input channel, 1 output) converted by acsconv's ``ACSConverter``.

    Args:
        pretrained_path: a local timm/torchvision ResNet-18 2D checkpoint (``.pth``/``.bin`` state
            dict, loaded with ``weights_only=True``, or ``.safetensors``). timm adapts the RGB ``conv1``
            to one channel (sum over RGB) and drops the 1000-class ``fc``. Without it: random
            initialisation and a one-line warning.
        drop_rate: dropout before the final linear layer.
    """
    import timm

    kwargs = {"in_chans": 1, "num_classes": 1, "drop_rate": drop_rate}
    if pretrained_path is None:
        log.warning("acs_resnet18: no pretrained_path, random initialisation (no ImageNet weights)")
        net = timm.create_model("resnet18", pretrained=False, **kwargs)
    else:
        path = Path(pretrained_path)
        if not path.is_file():
            raise ModelError(f"acs_resnet18 pretrained weights not found: {path}")
        try:
            net = timm.create_model(
                "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise ModelError(f"cannot load ResNet-18 weights from {path}: {exc}") from exc
    # Global pooling and the head stay 2D-agnostic: a 3D mean replaces timm's 2D pooling module.
    net.global_pool = GlobalAvgPool3d(flatten=True)
    converter = compat.acs_converter()
    net = converter(net).model
    return make_exportable(net)
