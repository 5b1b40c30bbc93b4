"""The model registry: the study's six architectures and improved variants, built as :class:`GliomaNet`
(one logit ``[B, 1]``).

>>> from gliodeploy.preprocessing import PreprocessConfig
>>> model = build_model("cnn3d", preprocessing=PreprocessConfig.tiny(), width="half")

Parameter counts of the study's backbones for the study grid (1 x 1 x 128 x 128 x 82) reproduce the
study's (``STUDY_PARAMETERS``); the in-graph normalisation adds none. The study's six
(:data:`STUDY_MODEL_NAMES`) stay unchanged for reproduction; ``lesionnet``
(:mod:`gliodeploy.models.lesionnet`) is a named improvement, not a study model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from gliodeploy.errors import ConfigError
from gliodeploy.models import acs_resnet18, cnn3d, compat, lesionnet, resnet10, senet, squeezenet3d, vgg3d
from gliodeploy.models.gliomanet import GliomaNet

if TYPE_CHECKING:
    from gliodeploy.preprocessing import PreprocessConfig

compat.apply()

#: Named widths of the study's reduced variants (conv filters 64/32/16, first FC 512/256/128).
WIDTHS: dict[str, float] = {"full": 1.0, "half": 0.5, "quarter": 0.25}


@dataclass(frozen=True)
class _Arch:
    """How to build one architecture's backbone for an input grid."""

    build: Callable[..., nn.Module]  # (grid, width, fc_width, pretrained_path, **kwargs) -> backbone
    head_kind: str
    gradcam_layer: str
    study_parameters: int | None  # None: not one of the study's architectures
    description: str
    width: bool = False  # accepts width / fc_width
    pretrained: bool = False  # accepts pretrained_path


def _cnn3d(grid: tuple[int, int, int], width: float, fc_width: int | None, dropout: float = 0.5) -> nn.Module:
    filters = [max(1, round(c * width)) for c in cnn3d.FULL_FILTERS]
    fc = fc_width if fc_width is not None else max(1, round(cnn3d.FULL_FC * width))
    return cnn3d.CNN3D(grid, filters=filters, fc_width=fc, dropout=dropout)


def _vgg11(grid: tuple[int, int, int], width: float, fc_width: int | None, dropout: float = 0.0) -> nn.Module:
    if fc_width is not None:
        raise ConfigError("model 'vgg11' has one linear layer after global pooling: fc_width does not apply")
    return vgg3d.VGG3D(grid, width=width, dropout=dropout)


def _library(
    factory: Callable[..., nn.Module], options: Callable[[], tuple[str, ...]] | None = None
) -> Callable[..., nn.Module]:
    """Adapt a library factory to the builder interface; ``options`` names what its ``**kwargs`` accept."""

    def build(grid: tuple[int, int, int], width: float, fc_width: int | None, **kwargs: Any) -> nn.Module:
        return factory(**kwargs)

    params = [p for p in inspect.signature(factory).parameters.values() if p.kind != p.VAR_KEYWORD]
    if options is not None:
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in options()]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # read by _check_kwargs
    return build


def _squeezenet(
    grid: tuple[int, int, int], width: float, fc_width: int | None, dropout: float = 0.5
) -> nn.Module:
    return squeezenet3d.SqueezeNet3D(grid, num_classes=2, dropout=dropout)


def _lesionnet(grid: tuple[int, int, int], width: float, fc_width: int | None, **options: Any) -> nn.Module:
    if fc_width is not None:
        raise ConfigError("model 'lesionnet' has no fully connected layer: fc_width does not apply")
    return lesionnet.build(grid, width, **options)


# The registry validates option names against a builder's signature: publish lesionnet.build's own
# options (one list of names and defaults, in lesionnet.py) as this wrapper's.
_lesionnet.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *list(inspect.signature(_lesionnet).parameters.values())[:3],
        *(p for n, p in inspect.signature(lesionnet.build).parameters.items() if n not in ("grid", "width")),
    ]
)


_ARCHS: dict[str, _Arch] = {
    "cnn3d": _Arch(
        _cnn3d, "logit", cnn3d.GRADCAM_LAYER, 5_414_081, "4-block 3D CNN + 2 FC layers", width=True
    ),
    "vgg11": _Arch(_vgg11, "logit", vgg3d.GRADCAM_LAYER, 27_658_497, "VGG11-3D with BatchNorm", width=True),
    "resnet10": _Arch(
        _library(resnet10.build_resnet10, resnet10.options),
        "logit",
        resnet10.GRADCAM_LAYER,
        14_356_929,
        "MONAI ResNet10",
    ),
    "acs_resnet18": _Arch(
        _library(acs_resnet18.build_acs_resnet18),
        "logit",
        acs_resnet18.GRADCAM_LAYER,
        11_170_753,
        "timm ResNet-18 converted to 3D by ACSConv",
        pretrained=True,
    ),
    "senet": _Arch(
        _library(senet.build_senet, senet.options),
        "two_class",
        senet.GRADCAM_LAYER,
        159_671_426,
        "MONAI SENet (SE bottleneck, layers 1-1-1-1)",
    ),
    "squeezenet": _Arch(
        _squeezenet, "two_class", squeezenet3d.GRADCAM_LAYER, 1_861_186, "SqueezeNet 1.0 in 3D, no BatchNorm"
    ),
    "lesionnet": _Arch(
        _lesionnet,
        "logit",
        lesionnet.GRADCAM_LAYER,
        None,
        "lesion detector: tolerant left-right asymmetry, evidence map at 2x spacing, global max "
        "(not a study model)",
        width=True,
    ),
}

#: Registered architecture names: the study's six in the study's order, then the improved variants.
MODEL_NAMES: tuple[str, ...] = tuple(_ARCHS)
#: The study's six architectures (reproduction).
STUDY_MODEL_NAMES: tuple[str, ...] = tuple(n for n, a in _ARCHS.items() if a.study_parameters is not None)
#: The study's parameter counts (backbone, full width, 128 x 128 x 82 input).
STUDY_PARAMETERS: dict[str, int] = {
    name: a.study_parameters for name, a in _ARCHS.items() if a.study_parameters is not None
}


def _arch(name: str) -> _Arch:
    if name not in _ARCHS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return _ARCHS[name]


def resolve_width(width: str | float) -> float:
    """``"full"``/``"half"``/``"quarter"`` or a positive factor -> the factor scaling filter counts."""
    if isinstance(width, str):
        if width not in WIDTHS:
            raise ConfigError(f"unknown width {width!r}; use one of {', '.join(WIDTHS)} or a number > 0")
        return WIDTHS[width]
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ConfigError(f"width must be 'full', 'half', 'quarter' or a number in (0, 4], got {width!r}")
    return float(width)


#: Builder arguments filled by the registry itself (``spacing``: the grid's voxel size, for builders
#: that declare it), never user options.
_FIXED = {"grid", "width", "fc_width", "spacing"}


def _check_kwargs(name: str, build: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    fixed = _FIXED
    allowed = [p for p in inspect.signature(build).parameters if p not in fixed and p != "pretrained_path"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(unknown)}; valid options: {valid}")


def build_model(
    name: str,
    *,
    preprocessing: PreprocessConfig | None = None,
    width: str | float = "full",
    fc_width: int | None = None,
    pretrained_path: str | Path | None = None,
    **kwargs: Any,
) -> GliomaNet:
    """Build a registered architecture as a :class:`GliomaNet`: normalisation -> backbone -> logit ``[B, 1]``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        preprocessing: the preprocessing config; its ``shape`` is the input grid and its intensity
            settings build the first layer. Default: ``PreprocessConfig.study()`` (128 x 128 x 82).
        width: ``"full"`` (study), ``"half"``, ``"quarter"`` or a factor; cnn3d, vgg11 and lesionnet.
        fc_width: width of cnn3d's first FC layer (default 512 x width).
        pretrained_path: local ResNet-18 2D weights for ``acs_resnet18`` (never downloaded).
        **kwargs: architecture options (e.g. ``dropout`` for cnn3d/vgg11/squeezenet, MONAI arguments
            for resnet10/senet, ``channels``/``asymmetry``/``pooling``/... for lesionnet). Unknown
            options raise :class:`ConfigError`.

    Raises:
        ConfigError: unknown name, width or option; option not supported by the architecture; grid
            too small for the architecture.
        ModelError: ``pretrained_path`` missing or unreadable.
    """
    from gliodeploy.models.normalize import IntensityNormalization
    from gliodeploy.preprocessing import PreprocessConfig

    arch = _arch(name)
    cfg = preprocessing if preprocessing is not None else PreprocessConfig.study()
    factor = resolve_width(width)
    if not arch.width and (factor != 1.0 or fc_width is not None):
        raise ConfigError(
            f"model {name!r} has no reduced-width variants (width/fc_width: cnn3d, vgg11; width: lesionnet)"
        )
    if fc_width is not None and (isinstance(fc_width, bool) or not isinstance(fc_width, int) or fc_width < 1):
        raise ConfigError(f"fc_width must be a positive integer, got {fc_width!r}")
    if pretrained_path is not None:
        if not arch.pretrained:
            raise ConfigError(f"model {name!r} has no pretrained weights option (only acs_resnet18)")
        kwargs["pretrained_path"] = pretrained_path
    _check_kwargs(name, arch.build, {k: v for k, v in kwargs.items() if k != "pretrained_path"})
    grid = tuple(cfg.shape)
    fixed: dict[str, Any] = {}
    if "spacing" in inspect.signature(arch.build).parameters:
        fixed["spacing"] = tuple(cfg.spacing)
    try:
        backbone = arch.build(grid, factor, fc_width, **fixed, **kwargs)
    except TypeError as exc:  # a library rejected an option value
        raise ConfigError(f"cannot build model {name!r} with options {kwargs}: {exc}") from exc
    spec = {
        "name": name,
        "width": width,
        "fc_width": fc_width,
        "grid": list(grid),
        "kwargs": _jsonable(kwargs),
    }
    return GliomaNet(
        IntensityNormalization(cfg),
        backbone,
        arch.head_kind,
        grid=grid,
        gradcam_layer=arch.gradcam_layer,
        spec=spec,
    )


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items()}


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_info(name: str) -> dict[str, Any]:
    """Registry facts about an architecture: head kind, Grad-CAM layer, study parameter count, options."""
    arch = _arch(name)
    fixed = _FIXED
    return {
        "name": name,
        "description": arch.description,
        "head_kind": arch.head_kind,
        "gradcam_layer": f"backbone.{arch.gradcam_layer}",
        "study_parameters": arch.study_parameters,
        "supports_width": arch.width,
        "supports_pretrained": arch.pretrained,
        "options": [p for p in inspect.signature(arch.build).parameters if p not in fixed],
    }
