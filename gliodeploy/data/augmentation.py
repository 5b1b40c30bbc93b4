"""nnU-Net-style data augmentation of masked SUV volumes with batchgeneratorsv2.

Probabilities and ranges follow nnU-Net's default trainer (rotation +-30 deg and scaling 0.7-1.4
each with p=0.2, elastic deformation off, Gaussian noise p=0.1, multiplicative brightness p=0.15,
contrast p=0.15, gamma p=0.3 (+ inverted p=0.1), mirroring). Two PET-specific choices:

- mirroring defaults to the left-right axis only: a tumour can sit in either hemisphere, but brains
  are not upside-down;
- the brain mask is re-applied after the intensity transforms (contrast/noise would otherwise paint
  the zero background), and SUV is clipped at 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from gliodeploy.errors import ConfigError


@dataclass(frozen=True)
class AugmentationConfig:
    """Which transforms run and how strongly (``p_*`` = probability per sample)."""

    p_rotation: float = 0.2
    rotation_deg: float = 30.0
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0  # nnU-Net leaves elastic deformation off
    mirror_axes: tuple[int, ...] = (0,)  # [x, y, z] axes; 0 = left-right
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.05)  # SUV^2
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "augmentation") -> AugmentationConfig:
        """Build from a TOML table; unknown keys and out-of-range probabilities raise ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})"
            )
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        cfg = cls(**kw)
        for f in fields(cls):
            v = getattr(cfg, f.name)
            if f.name.startswith("p_") and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ConfigError(f"{source}.{f.name} must be a probability in [0, 1] (got {v!r})")
            if isinstance(v, tuple) and f.name != "mirror_axes" and (len(v) != 2 or v[0] > v[1]):
                raise ConfigError(f"{source}.{f.name} must be a [low, high] pair (got {list(v)})")
        if any(a not in (0, 1, 2) for a in cfg.mirror_axes):
            raise ConfigError(f"{source}.mirror_axes must be among 0, 1, 2 (got {list(cfg.mirror_axes)})")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), for plans.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Augmenter:
    """Callable ``[1, X, Y, Z]`` tensor -> augmented tensor, built from batchgeneratorsv2 transforms.

    Randomness comes from the global torch/numpy generators (batchgeneratorsv2's design); the
    Dataset seeds them per sample so results do not depend on the worker count.
    """

    def __init__(self, shape: tuple[int, int, int], cfg: AugmentationConfig | None = None) -> None:
        from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
        from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
        from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
        from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
        from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
        from batchgeneratorsv2.transforms.utils.random import RandomTransform

        self.cfg = cfg = cfg or AugmentationConfig()
        rot = math.radians(cfg.rotation_deg)
        spatial = [
            SpatialTransform(
                tuple(shape),
                patch_center_dist_from_border=0,
                random_crop=False,
                p_elastic_deform=cfg.p_elastic,
                p_rotation=cfg.p_rotation,
                rotation=(-rot, rot),
                p_scaling=cfg.p_scaling,
                scaling=cfg.scaling,
                p_synchronize_scaling_across_axes=1,
            )
        ]
        if cfg.mirror_axes:
            spatial.append(MirrorTransform(allowed_axes=tuple(cfg.mirror_axes)))
        intensity = [
            RandomTransform(GaussianNoiseTransform(noise_variance=cfg.noise_variance), cfg.p_noise),
            RandomTransform(
                MultiplicativeBrightnessTransform(cfg.brightness, synchronize_channels=False),
                cfg.p_brightness,
            ),
            RandomTransform(
                ContrastTransform(cfg.contrast, preserve_range=True, synchronize_channels=False),
                cfg.p_contrast,
            ),
            RandomTransform(
                GammaTransform(
                    cfg.gamma, p_invert_image=1, synchronize_channels=False, p_per_channel=1, p_retain_stats=1
                ),
                cfg.p_gamma_inverted,
            ),
            RandomTransform(
                GammaTransform(
                    cfg.gamma, p_invert_image=0, synchronize_channels=False, p_per_channel=1, p_retain_stats=1
                ),
                cfg.p_gamma,
            ),
        ]
        self._spatial = ComposeTransforms(spatial)
        self._intensity = ComposeTransforms(intensity)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Augment one ``[1, X, Y, Z]`` float32 SUV tensor (masked: 0 outside the brain)."""
        out = self._spatial(image=image)["image"]
        mask = out > 0  # the brain after rotation/scaling/mirroring
        out = self._intensity(image=out)["image"]
        return torch.where(mask, out.clamp_min(0), torch.zeros_like(out)).contiguous()
