"""ResNet10-3D from MONAI (14,356,929 parameters with one input channel and one output)."""

from __future__ import annotations

from torch import nn

from gliodeploy.models.layers import make_exportable

GRADCAM_LAYER = "layer4"


def build_resnet10(**kwargs: object) -> nn.Module:
    """``monai.networks.nets.resnet10`` for 1-channel 3D volumes and a single logit.

    ``kwargs`` go to MONAI's ResNet (e.g. ``conv1_t_stride``). Adaptive pooling becomes a plain mean
    and ReLUs are not in place (export, Grad-CAM).
    """
    from monai.networks.nets import resnet10

    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=1, **kwargs)
    return make_exportable(net)
