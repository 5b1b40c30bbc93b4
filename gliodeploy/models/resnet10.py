"""ResNet10-3D from MONAI (14,356,929 parameters with one input channel and one output)."""

from __future__ import annotations

from torch import nn

from gliodeploy.models.layers import make_exportable

GRADCAM_LAYER = "layer4"
#: MONAI ResNet arguments fixed by the architecture (the rest are user options).
FIXED = ("self", "block", "layers", "block_inplanes", "spatial_dims", "n_input_channels", "num_classes")


def options() -> tuple[str, ...]:
    """MONAI ``ResNet`` arguments a user may set (``pretrained`` is not one: nothing is downloaded)."""
    import inspect

    from monai.networks.nets import ResNet

    return tuple(p for p in inspect.signature(ResNet.__init__).parameters if p not in FIXED)


def build_resnet10(**kwargs: object) -> nn.Module:
    """``monai.networks.nets.resnet10`` for 1-channel 3D volumes and a single logit.

    ``kwargs`` go to MONAI's ResNet (:func:`options`, e.g. ``conv1_t_stride``). Adaptive pooling
    becomes a plain mean and ReLUs are not in place (export, Grad-CAM).
    """
    from monai.networks.nets import resnet10

    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=1, **kwargs)
    return make_exportable(net)
