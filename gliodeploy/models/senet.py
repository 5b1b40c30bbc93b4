"""SENet-3D from MONAI, the study's configuration (159,671,426 parameters, 2-class head)."""

from __future__ import annotations

from torch import nn

from gliodeploy.models.layers import make_exportable

GRADCAM_LAYER = "layer4"
#: MONAI SENet arguments fixed by gliodeploy's input/output contract.
FIXED = ("self", "spatial_dims", "in_channels", "num_classes")


def options() -> tuple[str, ...]:
    """MONAI ``SENet`` arguments a user may override."""
    import inspect

    from monai.networks.nets import SENet

    return tuple(p for p in inspect.signature(SENet.__init__).parameters if p not in FIXED)


def build_senet(**kwargs: object) -> nn.Module:
    """``monai.networks.nets.SENet`` with SE-bottleneck blocks, layers (1, 1, 1, 1), reduction 4.

    MONAI defaults kept: inplanes 128, 3x3 input stem, downsample kernel 3, dropout 0.2. Returns
    2 class scores (the registry maps them to one logit). ``kwargs`` override SENet arguments
    (:func:`options`).
    """
    from monai.networks.nets import SENet

    params: dict[str, object] = {
        "spatial_dims": 3,
        "in_channels": 1,
        "block": "se_bottleneck",
        "layers": (1, 1, 1, 1),
        "groups": 1,
        "reduction": 4,
        "num_classes": 2,
    }
    params.update(kwargs)
    return make_exportable(SENet(**params))
