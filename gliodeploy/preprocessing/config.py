"""The preprocessing configuration: model grid, interpolation, brain mask and intensity normalisation.

One frozen :class:`PreprocessConfig` travels with a trained model (``plans.json``, model card) so that
training, export checks, the server-side geometry model and the client all preprocess identically.
Its :meth:`~PreprocessConfig.fingerprint` keys the training cache of preprocessed volumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from gliodeploy.errors import ConfigError

#: Orientation of the model grid (SimpleITK/DICOM code): identity direction cosines, so array index
#: x runs from patient right to Left, y from anterior to Posterior, z from inferior to Superior.
ORIENTATION = "LPS"

INTERPOLATIONS = ("linear", "bspline")
NORMALIZATIONS = ("minmax", "suv_clip", "tbr")
TBR_REFERENCES = ("mean", "robust")


#: Bump whenever preprocess() changes its output for the same config (mask, resampling, centring...).
#: 2: skull-base cut in the brain mask.
ALGORITHM_VERSION = 2


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How a native SUV volume becomes a model input.

    Geometry (see :func:`gliodeploy.preprocessing.preprocess`):

    * ``spacing`` (mm, x y z) and ``shape`` (voxels, x y z) of the model grid, oriented LPS.
    * ``interpolation``: ``"linear"`` (study) or ``"bspline"`` (cubic; overshoot is clipped at 0).
    * Brain mask, computed on a ``mask_spacing`` mm working grid: Gaussian smoothing
      (``mask_smoothing_mm`` sigma), threshold at ``mask_threshold`` x the brain's median uptake,
      opening (``mask_opening_mm`` radius) to cut scalp bridges, largest component, hole filling,
      closing (``mask_closing_mm``). ``apply_mask=False`` keeps the mask for centring only.
    * ``max_brain_cut`` : largest fraction of the brain mask allowed outside the output field of view
      before :class:`~gliodeploy.errors.InputError` is raised (a smaller cut only warns).

    Intensity (in-graph, :class:`gliodeploy.models.normalize.IntensityNormalization`; numpy twin
    :func:`gliodeploy.preprocessing.intensity.normalize`):

    * ``"minmax"`` (study): per volume ``(x - min) / (max - min)``, in [0, 1].
    * ``"suv_clip"``: ``clip(x, 0, suv_max) / suv_max``, in [0, 1].
    * ``"tbr"``: ``x / (reference * tbr_scale)`` where the reference is the mean SUV of brain voxels
      (``x > 0``); ``tbr_reference="robust"`` recomputes that mean without voxels above
      ``tbr_robust_factor`` x the first mean (1.6: the usual FDOPA tumour-volume threshold, which
      drops tumour and striatum). ``tbr_scale=4`` maps a tumour-to-brain ratio of 4 to 1.0.
    * ``eps`` guards every division.
    """

    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    shape: tuple[int, int, int] = (128, 128, 82)
    interpolation: str = "linear"
    apply_mask: bool = True
    mask_spacing: float = 4.0
    mask_smoothing_mm: float = 2.0
    mask_threshold: float = 0.6
    mask_opening_mm: float = 6.0
    mask_closing_mm: float = 8.0
    max_brain_cut: float = 0.05
    normalization: str = "minmax"
    suv_max: float = 10.0
    tbr_reference: str = "robust"
    tbr_robust_factor: float = 1.6
    tbr_scale: float = 4.0
    eps: float = 1e-6

    def __post_init__(self) -> None:
        # Normalise sequences to tuples of the right type so equal configs compare and hash equal.
        object.__setattr__(self, "spacing", _triple(self.spacing, "spacing", float))
        object.__setattr__(self, "shape", _triple(self.shape, "shape", int))
        if any(s <= 0 for s in self.spacing):
            raise ConfigError(f"preprocessing spacing must be > 0 mm, got {self.spacing}")
        if any(n < 4 for n in self.shape):
            raise ConfigError(f"preprocessing shape must be >= 4 voxels per axis, got {self.shape}")
        _choice(self.interpolation, "interpolation", INTERPOLATIONS)
        _choice(self.normalization, "normalization", NORMALIZATIONS)
        _choice(self.tbr_reference, "tbr_reference", TBR_REFERENCES)
        if not isinstance(self.apply_mask, bool):
            raise ConfigError(f"preprocessing apply_mask must be true/false, got {self.apply_mask!r}")
        for name in ("mask_spacing", "suv_max", "tbr_scale", "eps", "mask_threshold"):
            _positive(self, name)
        for name in ("mask_smoothing_mm", "mask_opening_mm", "mask_closing_mm", "max_brain_cut"):
            _positive(self, name, allow_zero=True)
        if self.max_brain_cut > 1:
            raise ConfigError(f"max_brain_cut is a fraction in [0, 1]; got {self.max_brain_cut}")
        if self.mask_threshold >= 1:
            raise ConfigError(
                f"preprocessing mask_threshold is a fraction of the brain's median uptake (< 1), got "
                f"{self.mask_threshold}"
            )
        _positive(self, "tbr_robust_factor")
        if self.tbr_robust_factor <= 1:
            raise ConfigError(f"preprocessing tbr_robust_factor must be > 1, got {self.tbr_robust_factor}")

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def study(cls, **overrides: Any) -> PreprocessConfig:
        """The study's grid: 2 mm, 128 x 128 x 82 (256 x 256 x 164 mm)."""
        return cls(**overrides)

    @classmethod
    def demo(cls, **overrides: Any) -> PreprocessConfig:
        """Same field of view at 4 mm: 64 x 64 x 41 (for demos on a CPU)."""
        return cls(**{"spacing": (4.0, 4.0, 4.0), "shape": (64, 64, 41), **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> PreprocessConfig:
        """Same field of view at 8 mm: 32 x 32 x 21 (for tests)."""
        return cls(**{"spacing": (8.0, 8.0, 8.0), "shape": (32, 32, 21), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PreprocessConfig:
        """A preset by name: ``study``, ``demo`` or ``tiny``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preprocessing preset {name!r}; choose one of {', '.join(PRESETS)}")
        return getattr(cls, name)(**overrides)

    # -- serialisation -----------------------------------------------------------------------------
    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        """Extent of the model grid in mm (x, y, z)."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); :meth:`from_dict` reads it back."""
        out = dataclasses.asdict(self)
        out["spacing"] = list(self.spacing)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build a config from :meth:`to_dict` output; unknown keys or bad values raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"preprocessing config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown preprocessing config key(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a list where a number belongs
            raise ConfigError(f"invalid preprocessing config: {exc}") from exc

    def fingerprint(self) -> str:
        """sha256 of :meth:`to_dict` plus :data:`ALGORITHM_VERSION` (stable across runs and platforms).

        The version is part of the key so that a change to the preprocessing code itself (not only to
        its settings) never lets the training cache serve volumes made by the old code.
        """
        keyed = {"algorithm_version": ALGORITHM_VERSION, **self.to_dict()}
        canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


PRESETS = ("study", "demo", "tiny")


def _triple(value: Any, name: str, kind: type) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ConfigError(f"preprocessing {name} must be 3 numbers (x, y, z), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"preprocessing {name} must be 3 finite numbers (x, y, z), got {value!r}")
        if kind is int and v != int(v):
            raise ConfigError(f"preprocessing {name} must be 3 integers (x, y, z), got {value!r}")
        out.append(kind(v))
    return tuple(out)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"preprocessing {name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(cfg: PreprocessConfig, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"preprocessing {name} must be a finite number {bound}, got {value!r}")
    object.__setattr__(cfg, name, float(value))
