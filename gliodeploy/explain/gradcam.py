"""3D Grad-CAM of the fold models with medcam (the study's tool).

Every gliodeploy model returns one logit (see docs/ARCHITECTURE.md), so Grad-CAM always explains the
**positive class (recurrence)**: the map shows the regions that push the prediction towards
recurrence, also for a scan predicted TRC. medcam returns the map at input size
(``return_attention=True``, trilinear upsampling of the layer's feature map), normalised to [0, 1]
per volume; the ensemble map is the mean of the folds' maps, as the ensemble probability is the mean
of theirs.

**Which layer.** A Grad-CAM map has the resolution of the explained layer's feature map: the last
block of a deep network (e.g. VGG11's 4 x 4 x 2 map on the 64 x 64 x 41 demo grid, 64 mm per voxel)
cannot localise a 1-2 cm lesion. :func:`layer_resolution` measures a layer's feature-map size and
:func:`resolution_warning` says, in one line, when it is coarser than :data:`COARSE_MM`.
:func:`default_layer` is the layer explained unless the caller names one: the registry's
``gradcam_layer``, or an explain-side override in :data:`EXPLAIN_LAYERS` (architecture name ->
layer), measured to localise better.

**Which method.** ``"gcam"`` (Grad-CAM) or ``"gcampp"`` (Grad-CAM++, medcam's second map for
convolutional layers; weights the gradients per position, often sharper for one small focus).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliodeploy.errors import InputError, ModelError

#: medcam backends offered (name -> description).
METHODS: dict[str, str] = {"gcam": "Grad-CAM", "gcampp": "Grad-CAM++"}
#: A feature map coarser than this (mm per feature voxel, any axis, at the model grid) cannot localise
#: a 1-2 cm lesion: the explainer warns. "About 16 mm": 10 % slack keeps e.g. 16.4 mm (41 slices
#: pooled to 10) quiet.
COARSE_MM = 16.0
_COARSE_SLACK = 1.1
#: Explain-side default layers by architecture name (``model.spec["name"]``), overriding the
#: registry's ``gradcam_layer`` (see the module docstring). Empty: the registry's layer is used.
#: Measured on a demo VGG11 that did not learn (OOF AUC 0.44): Grad-CAM of its earlier blocks is
#: empty (ReLU of a negative weighted sum everywhere) and Grad-CAM++ of an 8 mm block "finds" the
#: hottest spot whatever the model learned, so no study architecture gets an early-layer default.
EXPLAIN_LAYERS: dict[str, str] = {}


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM maps of one volume: ``maps`` ``[K, X, Y, Z]`` in [0, 1], one per model."""

    maps: np.ndarray
    probabilities: np.ndarray  # [K] P(recurrence) of each model
    layer: str
    method: str = "gcam"
    feature_shape: tuple[int, ...] = ()  # the layer's feature map (spatial axes), e.g. (4, 4, 2)

    @property
    def mean_map(self) -> np.ndarray:
        """The ensemble map (mean of the models' maps), ``[X, Y, Z]``."""
        return self.maps.mean(axis=0)

    @property
    def probability(self) -> float:
        """Ensemble probability (mean of the models')."""
        return float(self.probabilities.mean())


def default_layer(model: Any) -> str:
    """The layer explained when none is named: :data:`EXPLAIN_LAYERS` for the model's architecture,
    else the registry's ``gradcam_layer``."""
    spec = getattr(model, "spec", None) or {}
    override = EXPLAIN_LAYERS.get(str(spec.get("name", "")))
    names = dict(model.named_modules())
    if override and override in names:
        return override
    layer = getattr(model, "gradcam_layer", None)
    if not layer:
        raise ModelError("the model has no gradcam_layer; pass layer= explicitly")
    return str(layer)


def _check_layer(model: Any, layer: str) -> None:
    names = dict(model.named_modules())
    if layer not in names:
        convs = [n for n, m in names.items() if type(m).__name__ in ("Conv3d", "ReLU", "Sequential")]
        hint = f" (e.g. {', '.join(convs[-4:])})" if convs else ""
        raise ModelError(f"Grad-CAM layer {layer!r} is not a module of the model{hint}")


def _check_volume(volume_xyz: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume_xyz, dtype=np.float32)
    if volume.ndim != 3 or not np.isfinite(volume).all():
        raise InputError(f"Grad-CAM needs a finite 3-D volume [x, y, z], got shape {volume.shape}")
    return volume


class _TwoColumns:
    """Grad-CAM++ in medcam 0.1.22 fails on a single-logit output (its classification branch needs a
    class axis): explain ``[-logit, logit]`` for class 1 instead, which has the same gradients."""

    @staticmethod
    def wrap(model: Any) -> Any:
        import torch
        from torch import nn

        class TwoColumns(nn.Module):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                logit = self.net(x)
                return torch.cat([-logit, logit], dim=1)

        return TwoColumns(model)


class CamModel:
    """One model injected by medcam once, explained on many volumes (cohort summaries).

    ``layer`` defaults to :func:`default_layer`; ``method`` is a key of :data:`METHODS`. The model
    itself is left untouched (medcam patches a deep copy). For speed the copy's parameters are frozen
    and the explained layer's output is made the start of the autograd graph: the backward pass runs
    only from the logit down to that layer (the map only needs those gradients).
    """

    def __init__(self, model: Any, *, layer: str | None = None, method: str = "gcam") -> None:
        import torch
        from medcam import medcam

        if method not in METHODS:
            raise InputError(f"Grad-CAM method must be one of {', '.join(METHODS)}, got {method!r}")
        self.layer = layer or default_layer(model)
        _check_layer(model, self.layer)
        self.method = method
        copied = copy.deepcopy(model).eval()
        for p in copied.parameters():
            p.requires_grad_(False)
        self.feature_shape: tuple[int, ...] = ()

        def start_graph(_module: Any, _inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                return None
            self.feature_shape = tuple(int(s) for s in output.shape[2:])
            return output.detach().requires_grad_(True).clone()  # clone: later in-place ops stay legal

        copied.get_submodule(self.layer).register_forward_hook(start_graph)
        target, label = copied, None
        if method == "gcampp":
            target, label = _TwoColumns.wrap(copied), 1
        name = self.layer if target is copied else f"net.{self.layer}"
        self._two_columns = target is not copied
        self._model = medcam.inject(
            target, backend=method, layer=name, label=label, return_attention=True, save_maps=False
        )

    def __call__(self, volume_xyz: np.ndarray) -> tuple[np.ndarray, float]:
        """Map ``[X, Y, Z]`` (float32, [0, 1]) and P(recurrence) of one brain-masked SUV volume."""
        import torch

        volume = _check_volume(volume_xyz)
        x = torch.from_numpy(np.ascontiguousarray(volume))[None, None]
        try:
            with torch.enable_grad():
                logit, attention = self._model(x)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"Grad-CAM of layer {self.layer!r} failed: {exc}") from exc
        if attention is None or tuple(attention.shape[-3:]) != volume.shape:
            raise ModelError(f"medcam returned no map at input size for layer {self.layer!r}")
        cam = attention[0, 0].detach().cpu().numpy().astype(np.float32)
        cam = np.nan_to_num(cam, nan=0.0)  # a constant feature map gives 0/0 in medcam's normalisation
        logit = logit.detach()[:, -1]  # two columns: [-logit, logit]
        return cam, float(torch.sigmoid(logit)[0])


def gradcam(
    model, volume_xyz: np.ndarray, *, layer: str | None = None, method: str = "gcam"
) -> tuple[np.ndarray, float]:
    """Grad-CAM map ``[X, Y, Z]`` (float32, [0, 1]) of ``model`` on one brain-masked SUV volume.

    ``layer`` defaults to :func:`default_layer` (the registry's ``gradcam_layer`` unless explain
    overrides it). The model itself is left untouched. Returns the map and P(recurrence).
    """
    return CamModel(model, layer=layer, method=method)(volume_xyz)


def gradcam_models(
    models: Sequence, volume_xyz: np.ndarray, *, layer: str | None = None, method: str = "gcam"
) -> GradCam:
    """Grad-CAM of every model (e.g. the folds of a run) on the same volume."""
    if not models:
        raise ModelError("no models to explain")
    return explain_with([CamModel(m, layer=layer, method=method) for m in models], volume_xyz)


def explain_with(cams: Sequence[CamModel], volume_xyz: np.ndarray) -> GradCam:
    """Grad-CAM of already injected models (:class:`CamModel`) on one volume."""
    if not cams:
        raise ModelError("no models to explain")
    maps, probs = zip(*(c(volume_xyz) for c in cams), strict=True)
    return GradCam(np.stack(maps), np.array(probs), cams[0].layer, cams[0].method, cams[0].feature_shape)


def layer_resolution(
    feature_shape: Sequence[int], grid_shape: Sequence[int], spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """Millimetres per feature-map voxel along x, y, z for a model grid of ``grid_shape`` voxels at
    ``spacing_mm`` (the field of view divided by the feature map's size)."""
    if len(feature_shape) != 3:
        raise ModelError(f"the Grad-CAM layer's feature map is not 3-D: shape {tuple(feature_shape)}")
    return tuple(  # type: ignore[return-value]
        float(n * s / max(int(f), 1)) for n, s, f in zip(grid_shape, spacing_mm, feature_shape, strict=True)
    )


def resolution_warning(layer: str, feature_shape: Sequence[int], mm: Sequence[float]) -> str | None:
    """One line when the layer's feature map is too coarse to localise a small lesion, else None."""
    if max(mm) <= COARSE_MM * _COARSE_SLACK:
        return None
    shape = "x".join(str(int(f)) for f in feature_shape)
    size = " x ".join(f"{v:.0f}" for v in mm)
    return (
        f"Grad-CAM layer {layer!r} has a {shape} feature map ({size} mm per voxel): too coarse to "
        f"localise a 1-2 cm lesion (aim for <= {COARSE_MM:.0f} mm); pass an earlier layer with --layer "
        "(see `gliodeploy explain --list-layers`)"
    )


def layer_table(model: Any, grid_shape: Sequence[int], spacing_mm: Sequence[float]) -> list[dict[str, Any]]:
    """Every module with a 3-D feature map: name, type, feature shape and mm per voxel (one forward
    pass on zeros), in execution order; to choose a ``--layer``."""
    import torch

    rows: list[dict[str, Any]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or name == "normalization":
            continue

        def hook(_m: Any, _i: Any, out: Any, name: str = name, kind: str = type(module).__name__) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 5:
                shape = tuple(int(s) for s in out.shape[2:])
                rows.append(
                    {
                        "layer": name,
                        "type": kind,
                        "channels": int(out.shape[1]),
                        "feature_shape": list(shape),
                        "mm_per_voxel": list(layer_resolution(shape, grid_shape, spacing_mm)),
                    }
                )

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros((1, 1, *[int(n) for n in grid_shape])))
    finally:
        for h in handles:
            h.remove()
    return rows


def attention_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the total attention that falls inside ``mask`` (the brain): a sanity check
    against a model that looks at the skull, the field-of-view border or the background."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    if cam.shape != mask.shape:
        raise InputError(f"map shape {cam.shape} differs from mask shape {mask.shape}")
    total = cam.sum()
    return float(cam[np.asarray(mask) > 0].sum() / total) if total > 0 else 0.0
