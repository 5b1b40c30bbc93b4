"""Work-arounds for the libraries gliodeploy runs with (torch 2.13 CPU, torchvision 0.28, acsconv 0.1.1).

Each fix first *detects* the breakage and only then patches, so it becomes a no-op once upstream is
fixed. Nothing in site-packages is edited.

1. torchvision 0.28 is a CUDA build whose compiled ops (``torchvision._C``) do not load beside CPU
   torch. ``torchvision/_meta_registrations.py`` then still registers fake kernels for
   ``torchvision::nms`` and ``torchvision::qnms``, which fails with "operator torchvision::nms does
   not exist" and makes ``import torchvision`` (hence ``import timm``) fail. Fix: define those two
   operator schemas (no kernel) before torchvision is imported, so the registrations succeed. Calling
   ``torchvision.ops.nms`` still fails clearly (no kernel); gliodeploy never calls it.
2. acsconv 0.1.1 ``ACSConverter`` rebuilds normalisation layers from their attributes by constructor
   argument name; torch 2.13 added a ``bias: bool`` argument to BatchNorm, so the converter passes the
   bias *tensor* and fails ("Boolean value of Tensor ... is ambiguous"). Fix: a converter subclass that
   passes ``bias=child.bias is not None`` (:func:`acs_converter`).
3. ``acsconv.converters`` prints an "experimental" banner on stdout when imported; it is silenced so
   CLI output stays clean (:func:`import_acs_converter`).

Call :func:`apply` (idempotent) before importing timm or acsconv; the registry does.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import io
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Keeps the operator definitions alive: a torch.library.Library deregisters them when collected.
_TORCHVISION_FRAGMENT: torch.library.Library | None = None
_APPLIED = False
_ACS_CONVERTER: type | None = None

#: Schemas of the torchvision ops that torchvision 0.28 registers fake kernels for unconditionally
#: (copied from torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp).
_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _torchvision_op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _torchvision_extension_loads() -> bool:
    """Whether torchvision's compiled ops library loads into this torch (without importing torchvision)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to fix
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            lib = Path(folder) / f"_C{suffix}"
            if lib.is_file():
                try:
                    torch.ops.load_library(str(lib))  # same call torchvision.extension makes
                except (OSError, RuntimeError):
                    return False
                return True
    return False  # no compiled part shipped at all


def fix_torchvision_missing_ops() -> bool:
    """Define the torchvision op schemas that a non-loading ``torchvision._C`` leaves missing.

    Returns True when a patch was applied. Does nothing if torchvision is absent, already imported,
    or its compiled ops load.
    """
    global _TORCHVISION_FRAGMENT
    if "torchvision" in sys.modules or _TORCHVISION_FRAGMENT is not None:
        return False
    missing = [n for n in _TORCHVISION_SCHEMAS if not _torchvision_op_exists(n)]
    if not missing or _torchvision_extension_loads():
        return False
    missing = [n for n in missing if not _torchvision_op_exists(n)]
    if not missing:
        return False
    _TORCHVISION_FRAGMENT = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _TORCHVISION_FRAGMENT.define(_TORCHVISION_SCHEMAS[name])
    return True


def apply() -> None:
    """Apply every import-time fix (idempotent). Call before importing timm, torchvision or acsconv."""
    global _APPLIED
    if _APPLIED:
        return
    fix_torchvision_missing_ops()
    _APPLIED = True


def import_acs_converter() -> type:
    """Import ``acsconv.converters.ACSConverter`` without its stdout banner."""
    apply()
    with contextlib.redirect_stdout(io.StringIO()):
        from acsconv.converters import ACSConverter
    return ACSConverter


def _ctor_kwargs(target: type, child: nn.Module) -> dict[str, Any]:
    """Constructor arguments of ``target`` read back from the attributes of ``child``.

    ``bias`` is a flag in module constructors but a tensor (or None) as an attribute: pass the flag.
    """
    params = inspect.signature(target.__init__).parameters
    kwargs: dict[str, Any] = {}
    for name, p in params.items():
        if name in ("self", "device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name == "bias":
            kwargs[name] = getattr(child, "bias", None) is not None
        elif hasattr(child, name):
            kwargs[name] = getattr(child, name)
    return kwargs


def _make_fixed_converter(base: type) -> type:
    from acsconv.utils import _triple_same

    class FixedACSConverter(base):  # type: ignore[misc, valid-type]
        """``ACSConverter`` that rebuilds pooling/normalisation layers with a boolean ``bias`` flag."""

        def convert_module(self, module: nn.Module) -> nn.Module:
            for child_name, child in module.named_children():
                cls_name = type(child).__name__
                is_pool_or_norm = "pool" in cls_name.lower() or "norm" in cls_name.lower()
                if isinstance(child, nn.Conv2d):
                    kwargs = self.convert_conv_kwargs(_conv_kwargs(child))
                    setattr(module, child_name, type(self).target_conv(**kwargs))
                elif hasattr(nn, cls_name) and is_pool_or_norm and cls_name.endswith("2d"):
                    target = getattr(nn, cls_name[:-2] + "3d", None)
                    if target is None:
                        raise NotImplementedError(f"no 3D counterpart for {cls_name}")
                    kwargs = _ctor_kwargs(target, child)
                    if "adaptive" in cls_name.lower():
                        kwargs = {k: _triple_same(v) for k, v in kwargs.items()}
                    setattr(module, child_name, target(**kwargs))
                elif isinstance(child, nn.Upsample):
                    kwargs = _ctor_kwargs(nn.Upsample, child)
                    if kwargs.get("mode") == "bilinear":
                        kwargs["mode"] = "trilinear"
                    setattr(module, child_name, nn.Upsample(**kwargs))
                else:
                    self.convert_module(child)
            return module

    return FixedACSConverter


def _conv_kwargs(child: nn.Conv2d) -> dict[str, Any]:
    """Conv2d constructor arguments (ACSConverter's convert_conv_kwargs turns ``bias`` into a flag)."""
    names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
    kwargs: dict[str, Any] = {n: getattr(child, n) for n in names}
    kwargs["bias"] = child.bias
    kwargs["padding_mode"] = child.padding_mode
    return kwargs


def _upstream_converter_works(converter: type) -> bool:
    probe = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
    try:
        converter(probe)
    except (RuntimeError, TypeError):
        return False
    return isinstance(probe[1], nn.BatchNorm3d)


def acs_converter() -> type:
    """The ACSConverter class to use: upstream if it works with this torch, else the fixed subclass."""
    global _ACS_CONVERTER
    if _ACS_CONVERTER is None:
        upstream = import_acs_converter()
        _ACS_CONVERTER = upstream if _upstream_converter_works(upstream) else _make_fixed_converter(upstream)
    return _ACS_CONVERTER
