"""LesionNet: a small lesion-detection CNN for static FDOPA PET ("one hot focus anywhere in the brain").

Not one of the study's six architectures: an improved, named option of the experiment config
(``[model] name = "lesionnet"``, options under ``[model.kwargs]``). Why it looks the way it does
(measured with ``bench/bench_learning.py``, results in ``bench/results/learning_probe_*.json``):

* The label is carried by **one focal lesion** somewhere in a mostly empty volume. Flatten + FC
  (CNN3D) must learn the lesion at every position separately; global *average* pooling (VGG,
  ResNet) dilutes a 1-2 cm focus in the whole brain. LesionNet computes a one-channel **lesion
  evidence map** at high resolution and reduces it with a global **max** (or a soft max: LogSumExp,
  attention pooling; ``"mean"`` is the global-average baseline): the logit is the evidence of the
  most suspicious place, wherever it is.
* Localisation, not intensity, is the hard part. On the 4 mm demo grid the observed peak within
  14 mm of the true lesion centre separates the classes almost as well as the ground-truth TBRmax
  (AUC 0.77 vs 0.80, 100 synthetic training subjects), but the global maximum of the scan does not
  (0.57): the hottest structure of every FDOPA scan is the **striatum**.
* The striatum is bilateral, a glioma unilateral: the **asymmetry channel** ``s - max_window(flip_x(s))``
  (:class:`Asymmetry`; the model grid is LPS with the brain centred, so array axis x is left-right)
  cancels it. The plain difference ``x - flip_x(x)`` does not cancel it well enough (a head a few
  mm off-centre or rotated leaves striatal residue; global max AUC 0.64); comparing with the
  *maximum* of the mirrored side within +-12 mm after +-4 mm smoothing does (0.76, no parameters).
* The **evidence prior** adds that asymmetry channel to the evidence with a learnable gain and the
  learned part starting at zero, so training starts from the zero-parameter score instead of from
  the class prior. 5 folds x 12 epochs on 100 subjects, honest OOF: plain asymmetry without prior
  AUC 0.65 (Grad-CAM peak within 20 mm of the lesion for 29 % of true recurrences); tolerant
  asymmetry with prior 0.74 (100 %); the untrained default already scores 0.76.
* The prior's lesion side can stay unsmoothed (``asymmetry_peak_smoothing_mm = 0``, the demo's
  setting): smoothing both sides over +-4 mm averages a 1-2 cm focus down to its mean, while TBRmax
  (and the label) follow its peak. Zero-parameter score on the demo cohort: AUC 0.853 (training site)
  and 0.764 (external) vs 0.856 and 0.714 with both sides smoothed; on the learning-curve cohort
  0.819 vs 0.797 (400 training subjects) and 0.700 vs 0.683 (external).
* The asymmetry can be a **ratio** (``asymmetry_mode = "ratio"``): uptake over the mirrored side's,
  floored at healthy brain - the tumour-to-contralateral ratio readers use, which scales an excess by
  its background as TBR does. With an 8 mm tolerance and nothing smoothed its zero-parameter score
  ranks the learning-curve cohort's subjects closer to their true TBRmax (Spearman 0.934 training
  site / 0.931 external, vs 0.926 / 0.917 for the difference and 0.945 / 0.931 for the TBR baseline;
  AUC 0.822 / 0.725 vs 0.819 / 0.700). Trained (4 epochs, n = 100): OOF AUC 0.832 vs 0.817, external
  0.725 vs 0.700. On the demo cohort it is a wash (untrained OOF 0.855 vs 0.853, external 0.752 vs
  0.764, n = 60). Any mirror prior misses a lesion on the midline, which faces itself in the mirror
  (the TBR baseline excludes only the striatum and does not).
* The ratio can carry a **partial-volume contrast term** (``asymmetry_contrast_gamma``): ratio x
  ``(uptake / brain mean within +-asymmetry_contrast_mm) ** gamma``. The scanner's blur lowers a small
  focus's peak more than a large one's, and a small focus stands far above its neighbourhood's mean
  while a large one does not, so the term reads small lesions up. On the learning-curve cohort the
  residual of the ratio (and of the TBR baseline) against the true TBRmax correlates with the lesion
  radius (r = 0.3-0.4); with gamma 0.5 (+-4 mm) and a floor of 0.3 (a healthy contralateral side counts
  at its local maximum, ~1.2x healthy brain) the zero-parameter score ranks subjects closer to their
  true TBRmax than the TBR baseline on both sites (Spearman 0.953 / 0.947 vs 0.945 / 0.931; AUC 0.835 /
  0.733 vs 0.827 / 0.734), chosen there before the demo cohort was scored.
* The mirror position can come from the brain's **mid-sagittal plane**, estimated in the network
  (``asymmetry_mirror = "midsagittal"``, :mod:`gliodeploy.models.midsagittal`), instead of the grid's
  x axis flipped. A head turned by 10 deg puts the flipped position of a frontal place 1-2 cm from its
  true mirror, so a lesion there can be compared with itself (demo sub-106: true TBRmax 3.15, grid
  ratio 1.39, TBR baseline 2.62). With the plane, the zero-parameter score of the demo's setting ranks
  the learning-curve cohort's training site closer to the true TBRmax (Spearman 0.962 vs 0.953; AUC
  0.841 vs 0.835; external 0.946 / 0.725 vs 0.947 / 0.733; ``bench/bench_prior_ranking.py``), chosen
  there before the demo was scored.
* What training adds (``gliodeploy evaluate`` compares every run with its untrained self): at ~100
  subjects, nothing measurable; 12 epochs even lower the out-of-fold AUC below the prior's (learning-
  curve cohort 0.776 vs 0.819, paired 95 % CI -0.077 to -0.010), 4 epochs keep it (0.817).
* Only 1-2 poolings: the evidence map keeps 2x the input spacing (8 mm on the 4 mm demo grid), so
  its Grad-CAM (the evidence layer, :data:`GRADCAM_LAYER`) localises a lesion; deeper levels (16 mm,
  32 mm, for context) are upsampled back to the evidence level and concatenated (U-Net-like, 1x1x1
  convolutions only, so the extra cost is small).
* Evidence outside the brain is pushed to :data:`OUTSIDE` (the input is brain-masked SUV, zero
  outside), so neither the pooling nor Grad-CAM can use the background; the Grad-CAM layer outputs
  ``exp(evidence)``, so its map is the evidence relative to its maximum (see :class:`EvidenceMap`).
* Intensity: use the experiment's ``normalization = "tbr"`` (uptake relative to healthy brain, the
  quantity the label depends on); :data:`PRIOR_INIT` is calibrated for it.

All blocks are ``Conv3d(bias=False) -> BatchNorm3d -> ReLU(inplace=False)`` (explainable); the model
exports to ONNX with a dynamic batch. Default size: 53,298 parameters (channels 8/16/32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gliodeploy.errors import ConfigError
from gliodeploy.models.layers import check_feature_size, halving_kernel, pooled_size
from gliodeploy.models.midsagittal import MidSagittalPlane, reflect

#: Channels per resolution level at width 1.0: level 0 = input spacing, level k = 2^k x spacing.
DEFAULT_CHANNELS: tuple[int, ...] = (8, 16, 32)
POOLINGS = ("max", "lse", "attention", "mean")
#: Start of the evidence prior ``(gain, bias)``: ``logit = gain * max(asymmetry) + bias`` with the
#: default asymmetry (12 mm tolerance, 4 mm smoothing) on the "tbr" input; a logistic fit of that
#: zero-parameter score on 100 synthetic training subjects gave (10.7, -1.14).
PRIOR_INIT = (10.0, -1.0)
#: The same start for an unsmoothed lesion side (``asymmetry_peak_smoothing_mm = 0``), whose score is
#: higher: a logistic fit on the 400 training subjects of the learning-curve cohort (``gliodeploy
#: synth --n 500 --seed 1``, not the demo cohort) gave (12.0, -2.15); the original score there (11.96, -1.40).
PRIOR_INIT_PEAK = (12.0, -2.15)
#: The start for the ratio asymmetry (``asymmetry_mode = "ratio"``; fitted with 8 mm tolerance and no
#: smoothing, the demo's setting), by the same logistic fit on the same 400 subjects: (3.43, -5.33).
PRIOR_INIT_RATIO = (3.4, -5.3)
#: The start for the ratio with the partial-volume contrast term (``asymmetry_contrast_gamma = 0.5``,
#: ``asymmetry_ratio_floor = 0.3``, 8 mm tolerance, nothing smoothed), by the same logistic fit on the
#: same 400 subjects: (3.49, -5.80) with the mid-sagittal mirror (the demo's setting), (3.46, -5.74)
#: with the grid's.
PRIOR_INIT_CONTRAST = (3.5, -5.8)
ASYMMETRY_MODES = ("difference", "ratio")
#: Where the mirror position comes from: the grid's x axis flipped, or the reflection about the brain's
#: mid-sagittal plane estimated in the network (:mod:`gliodeploy.models.midsagittal`).
MIRRORS = ("grid", "midsagittal")
#: Default floor of the ratio's denominator: 0.25 is the healthy-brain mean of the "tbr" input
#: (uptake / healthy-brain mean / ``tbr_scale`` 4).
RATIO_FLOOR = 0.25
#: Evidence (a logit) is softly bounded to (-BOUND, BOUND) so that exp() of it is finite in float32.
BOUND = 30.0
#: Evidence written outside the brain: below any brain value, exp(OUTSIDE) ~ 4e-18 is still a normal
#: float32 (so log() recovers it and ONNX Runtime agrees).
OUTSIDE = -40.0


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """``Conv3d(bias=False) -> BatchNorm3d -> ReLU`` (same padding; the ReLU is not in place)."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=False),
    )


def box_window(radius_mm: float, spacing: Sequence[float]) -> tuple[int, int, int]:
    """Odd box size per axis covering +-``radius_mm`` (1 = no window)."""
    return tuple(2 * round(radius_mm / float(s)) + 1 for s in spacing)  # type: ignore[return-value]


def _separable(pool, x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """A stride-1, same-size box max/avg pooling done one axis at a time (cheap for large windows)."""
    for axis, k in enumerate(window):
        if k > 1:
            kernel = [1, 1, 1]
            kernel[axis] = k
            padding = [0, 0, 0]
            padding[axis] = k // 2
            x = pool(x, tuple(kernel), 1, tuple(padding))
    return x


class Asymmetry(nn.Module):
    """``[B, 1, X, Y, Z] -> [B, 2, X, Y, Z]``: the input and its left-right asymmetry.

    Asymmetry (``mode="difference"``) = ``p - max_window(flip_x(s))`` where ``s`` is the input
    box-smoothed over ``smooth`` voxels, ``p`` the input box-smoothed over ``peak_smooth`` voxels
    (default: ``smooth``) and ``max_window`` the maximum of the mirrored side within a ``window``
    box: a place is asymmetric only if it is hotter than *everything* near its mirror position. The
    tolerance absorbs a head that is not exactly centred or is slightly rotated, so the bilateral
    striatum cancels even then, while a unilateral lesion stays. ``peak_smooth = (1, 1, 1)`` keeps
    the lesion side unsmoothed, so a small hot focus keeps its peak (what TBRmax reads) instead of
    its mean over the smoothing box. ``window = smooth = peak_smooth = (1, 1, 1)``: plain
    ``x - flip_x(x)``.

    ``mode="ratio"``: ``p / max(max_window(flip_x(s)), floor)``, the uptake over the contralateral
    uptake - the tumour-to-contralateral ratio readers use for FDOPA - never over less than ``floor``
    (the healthy-brain level of the input, so a place whose mirror falls outside the brain or on a
    cold ventricle is compared with healthy brain, not divided by ~0). A difference ranks the same
    excess the same whatever the contralateral uptake; the ratio, like TBR, scales it by the background.

    ``contrast_gamma`` > 0 (ratio mode only) multiplies the ratio by ``(p / local_mean) ** gamma``, where
    ``local_mean`` is the brain's mean uptake in a ``contrast_window`` box around the place: a
    partial-volume recovery term. The scanner's blur lowers a small focus's peak more than a large one's
    (its peak is close to its neighbourhood's mean for a large focus, far above it for a small one), so
    the ratio alone under-reads small lesions (on the learning-curve cohort its residual against the true
    TBRmax correlates with the lesion radius, r = 0.3-0.4; the TBR baseline's too). The mean is taken over
    brain voxels only, so the brain's edge is not sharpened.

    ``mirror="midsagittal"``: the mirror position is the reflection about the brain's mid-sagittal
    plane, estimated on the input (:class:`~gliodeploy.models.midsagittal.MidSagittalPlane`), instead of
    the grid's x axis flipped (``"grid"``): a turned or tilted head no longer compares a frontal or
    occipital place with a place 1-2 cm off its true mirror position.
    """

    def __init__(
        self,
        window: Sequence[int] = (1, 1, 1),
        smooth: Sequence[int] = (1, 1, 1),
        peak_smooth: Sequence[int] | None = None,
        mode: str = "difference",
        floor: float = RATIO_FLOOR,
        contrast_gamma: float = 0.0,
        contrast_window: Sequence[int] = (3, 3, 3),
        mirror: str = "grid",
        spacing: Sequence[float] = (4.0, 4.0, 4.0),
    ) -> None:
        super().__init__()
        if mode not in ASYMMETRY_MODES:
            raise ValueError(f"asymmetry mode must be one of {ASYMMETRY_MODES}, got {mode!r}")
        if contrast_gamma and mode != "ratio":
            raise ValueError("the partial-volume contrast term needs the ratio mode")
        if mirror not in MIRRORS:
            raise ValueError(f"asymmetry mirror must be one of {MIRRORS}, got {mirror!r}")
        self.window = tuple(int(k) for k in window)
        self.smooth = tuple(int(k) for k in smooth)
        self.peak_smooth = self.smooth if peak_smooth is None else tuple(int(k) for k in peak_smooth)
        self.mode = mode
        self.floor = float(floor)
        self.contrast_gamma = float(contrast_gamma)
        self.contrast_window = tuple(int(k) for k in contrast_window)
        self.mirror = mirror
        self.spacing = tuple(float(v) for v in spacing)
        self.plane = MidSagittalPlane(self.spacing) if mirror == "midsagittal" else None

    def extra_repr(self) -> str:
        text = f"window={self.window}, smooth={self.smooth}, peak_smooth={self.peak_smooth}"
        if self.mode == "difference":
            return text if self.mirror == "grid" else f"{text}, mirror={self.mirror}"
        text = f"{text}, mode=ratio, floor={self.floor:g}"
        if self.contrast_gamma:
            text = f"{text}, contrast_gamma={self.contrast_gamma:g}, contrast_window={self.contrast_window}"
        return text if self.mirror == "grid" else f"{text}, mirror={self.mirror}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _separable(F.avg_pool3d, x, self.smooth)
        p = s if self.peak_smooth == self.smooth else _separable(F.avg_pool3d, x, self.peak_smooth)
        mirror = _separable(F.max_pool3d, self.mirrored(s, x), self.window)
        if self.mode == "ratio":
            ratio = p / torch.clamp(mirror, min=self.floor)
            if self.contrast_gamma:
                ratio = ratio * torch.pow(p / self.local_mean(x), self.contrast_gamma)
            return torch.cat([x, ratio], dim=1)
        return torch.cat([x, p - mirror], dim=1)

    def mirrored(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``v`` at each place's mirror position: the grid's x axis flipped, or the reflection about the
        mid-sagittal plane estimated on the input ``x``."""
        if self.plane is None:
            return torch.flip(v, dims=(2,))
        normal, centre = self.plane(x)
        return reflect(v, normal, centre, self.spacing)

    def local_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean uptake of the brain voxels in the ``contrast_window`` box (tiny where there are none)."""
        brain = (x > 0).to(x.dtype)
        total = _separable(F.avg_pool3d, x, self.contrast_window)
        share = _separable(F.avg_pool3d, brain, self.contrast_window)
        return torch.clamp(total, min=1e-6) / torch.clamp(share, min=1e-6)


class EvidenceMap(nn.Module):
    """The Grad-CAM layer: a positive lesion-likelihood map ``exp(e)``, ~0 outside the brain.

    ``forward(features, brain, prior)``: ``features`` ``[B, C, ...]`` at the evidence level,
    ``brain`` ``[B, 1, ...]`` in {0, 1} at the same size, ``prior`` ``[B, 1, ...]`` (the asymmetry
    channel max-pooled to that size) or None. Two 1x1x1 convolutions (C -> hidden -> 1) give the
    learned evidence; with a prior, ``e = learned + gain * prior`` where the last convolution starts
    at zero and ``(gain, bias)`` at :data:`PRIOR_INIT`, so an untrained model already scores the
    asymmetry (the zero-parameter score, see the module notes) and training refines it.

    ``e`` (a logit per place) is softly bounded to ``(-BOUND, BOUND)``; outside the brain
    ``e = OUTSIDE``. The layer outputs ``exp(e)`` and the pooling works on ``log`` of it, so the map
    is strictly positive in the brain: its Grad-CAM (one channel, positive gradient weight for every
    pooling kind) is exactly ``exp(e - max e)`` - the evidence relative to the most suspicious place,
    never an empty map for a scan without a lesion.
    """

    def __init__(
        self,
        c_in: int,
        hidden: int,
        dropout: float = 0.0,
        prior: bool = False,
        prior_init: tuple[float, float] = PRIOR_INIT,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.hidden = nn.Sequential(
            nn.Conv3d(c_in, hidden, kernel_size=1, bias=False),
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=False),
        )
        self.out = nn.Conv3d(hidden, 1, kernel_size=1)
        self.gain = nn.Parameter(torch.tensor(float(prior_init[0]))) if prior else None
        if prior:
            nn.init.zeros_(self.out.weight)
            nn.init.constant_(self.out.bias, float(prior_init[1]))

    def forward(
        self, features: torch.Tensor, brain: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        e = self.out(self.hidden(self.dropout(features)))
        if self.gain is not None and prior is not None:
            e = e + self.gain * prior
        e = BOUND * torch.tanh(e / BOUND)
        return torch.exp(e * brain + OUTSIDE * (1.0 - brain))


class LesionNet(nn.Module):
    """Asymmetry channel -> multi-level conv encoder -> evidence map at ``evidence_level`` -> global pooling.

    Args:
        grid: input grid ``(X, Y, Z)``.
        channels: filters per level (``len(channels) - 1`` poolings); two conv blocks per level except
            level 0, which has one (it is the costliest, at full resolution).
        asymmetry: add the left-right asymmetry channel (:class:`Asymmetry`).
        spacing: voxel size (mm) of the grid, for the millimetre options below.
        asymmetry_tolerance_mm: the mirrored side's maximum is taken within +- this distance.
        asymmetry_smoothing_mm: box smoothing (+- this distance) before the asymmetry.
        asymmetry_peak_smoothing_mm: box smoothing of the lesion side only (the mirrored side keeps
            ``asymmetry_smoothing_mm``); None: the same as ``asymmetry_smoothing_mm`` (the original
            LesionNet). 0 keeps a small focus's peak (see :class:`Asymmetry`).
        asymmetry_mode: ``"difference"`` (lesion side minus mirrored side, the original LesionNet) or
            ``"ratio"`` (lesion side over mirrored side, a tumour-to-contralateral ratio; see
            :class:`Asymmetry`).
        asymmetry_ratio_floor: the ratio's denominator is at least this (input units; 0.25 = the
            healthy-brain mean of the "tbr" input).
        asymmetry_contrast_gamma: exponent of the partial-volume contrast term of the ratio (0: none;
            see :class:`Asymmetry`).
        asymmetry_contrast_mm: half-size of the box whose brain mean the contrast term compares the
            uptake with.
        asymmetry_mirror: ``"grid"`` (the grid's x axis flipped, the original LesionNet) or
            ``"midsagittal"`` (the reflection about the brain's mid-sagittal plane, estimated in the
            network; see :mod:`gliodeploy.models.midsagittal`).
        evidence_prior: add the asymmetry channel (max-pooled to the evidence level) to the evidence
            with a learnable gain, the learned part starting at zero (needs ``asymmetry``).
        pooling: ``"max"`` (global max of the evidence), ``"lse"`` (LogSumExp soft maximum,
            ``(1/r) log mean_brain exp(r e)``, with learnable sharpness starting at ``lse_r``),
            ``"attention"`` (softmax-weighted mean of the evidence, weights from a 1x1x1 conv of the
            same features) or ``"mean"`` (mean over the brain; the "global average" baseline).
        evidence_level: level of the evidence map (1: 2x the input spacing).
        hidden: channels of the evidence head's hidden 1x1x1 layer.
        dropout: channel dropout before the evidence head.
        lse_r: initial LogSumExp sharpness (``"lse"`` only).
    """

    def __init__(
        self,
        grid: Sequence[int],
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        spacing: Sequence[float] = (4.0, 4.0, 4.0),
        asymmetry: bool = True,
        asymmetry_tolerance_mm: float = 12.0,
        asymmetry_smoothing_mm: float = 4.0,
        asymmetry_peak_smoothing_mm: float | None = None,
        asymmetry_mode: str = "difference",
        asymmetry_ratio_floor: float = RATIO_FLOOR,
        asymmetry_contrast_gamma: float = 0.0,
        asymmetry_contrast_mm: float = 4.0,
        asymmetry_mirror: str = "grid",
        evidence_prior: bool = True,
        pooling: str = "max",
        evidence_level: int = 1,
        hidden: int = 16,
        dropout: float = 0.0,
        lse_r: float = 4.0,
    ) -> None:
        super().__init__()
        self.asymmetry = (
            Asymmetry(
                box_window(asymmetry_tolerance_mm, spacing),
                box_window(asymmetry_smoothing_mm, spacing),
                None
                if asymmetry_peak_smoothing_mm is None
                else box_window(asymmetry_peak_smoothing_mm, spacing),
                mode=asymmetry_mode,
                floor=asymmetry_ratio_floor,
                contrast_gamma=asymmetry_contrast_gamma,
                contrast_window=box_window(asymmetry_contrast_mm, spacing),
                mirror=asymmetry_mirror,
                spacing=spacing,
            )
            if asymmetry
            else nn.Identity()
        )
        self.use_prior = bool(asymmetry and evidence_prior)
        self.pooling = pooling
        self.evidence_level = evidence_level
        c_in, size = (2 if asymmetry else 1), tuple(int(s) for s in grid)
        self.kernels: list[tuple[int, int, int]] = []
        self.levels = nn.ModuleList()
        sizes = [size]
        for level, c_out in enumerate(channels):
            if level == 0:
                block = conv_bn_relu(c_in, c_out)
            else:
                kernel = halving_kernel(size)
                self.kernels.append(kernel)
                size = pooled_size(size, kernel)
                sizes.append(size)
                block = nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))
            self.levels.append(block)
            c_in = c_out
        check_feature_size("lesionnet", grid, size)
        self.sizes = sizes
        fused = sum(channels[evidence_level:])
        sharp_peak = asymmetry_peak_smoothing_mm is not None and box_window(
            asymmetry_peak_smoothing_mm, spacing
        ) == (1, 1, 1)
        if asymmetry_mode == "ratio":
            prior_init = PRIOR_INIT_CONTRAST if asymmetry_contrast_gamma else PRIOR_INIT_RATIO
        else:
            prior_init = PRIOR_INIT_PEAK if sharp_peak else PRIOR_INIT
        self.evidence = EvidenceMap(fused, hidden, dropout, prior=self.use_prior, prior_init=prior_init)
        if pooling == "attention":
            self.attention = nn.Conv3d(fused, 1, kernel_size=1)
        if pooling == "lse":
            self.log_r = nn.Parameter(torch.tensor(math.log(lse_r)))

    @property
    def prior_description(self) -> str | None:
        """What the untrained model already scores (None: nothing by design, the usual random init).

        With the evidence prior the learned part starts at exactly zero, so a freshly built model
        scores ``gain * max(asymmetry) + bias``: `gliodeploy evaluate` compares the trained folds with
        it to say whether training added anything.
        """
        if not self.use_prior:
            return None
        kind = "ratio" if self.asymmetry.mode == "ratio" else "asymmetry"
        if self.asymmetry.mode == "ratio" and self.asymmetry.contrast_gamma:
            kind = "ratio (with partial-volume contrast)"
        return f"its built-in left-right {kind} prior (the untrained model)"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free input stage: the input and its asymmetry channel (or the input alone).

        Folds of one run share it exactly (same options, no parameters), so an exported ensemble computes
        it once (:class:`gliodeploy.export.ensemble.EnsembleModule`).
        """
        return self.asymmetry(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Fused features, brain mask and asymmetry prior (or None) at the evidence level."""
        return self.features_prepared(self.prepare(x))

    def features_prepared(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`features` from the output of :meth:`prepare` (channel 0 is the input itself)."""
        brain = (h[:, 0:1] > 0).to(h.dtype)  # the input is brain-masked (zero outside)
        prior = h[:, 1:2] if self.use_prior else None
        outs = []
        for level, block in enumerate(self.levels):
            if level > 0:
                k = self.kernels[level - 1]
                h = F.max_pool3d(h, k, k)
                if level <= self.evidence_level:
                    brain = F.avg_pool3d(brain, k, k)
                    prior = F.max_pool3d(prior, k, k) if prior is not None else None
            h = block(h)
            outs.append(h)
        brain = (brain >= 0.5).to(h.dtype)  # a cell is brain when at least half of it is
        target = outs[self.evidence_level].shape[2:]
        fused = [outs[self.evidence_level]] + [
            F.interpolate(o, size=target, mode="nearest") for o in outs[self.evidence_level + 1 :]
        ]
        return torch.cat(fused, dim=1), brain, prior

    def evidence_map(self, x: torch.Tensor) -> torch.Tensor:
        """The evidence ``e`` ``[B, 1, ...]`` (logits; OUTSIDE outside the brain) at the evidence level."""
        return torch.log(self.evidence(*self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_prepared(self.prepare(x))

    def forward_prepared(self, h: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from the output of :meth:`prepare`."""
        f, brain, prior = self.features_prepared(h)
        e = torch.log(self.evidence(f, brain, prior)).flatten(1)  # [B, N] evidence logits
        if self.pooling == "max":
            return e.amax(dim=1, keepdim=True)
        b = brain.flatten(1)
        if self.pooling == "mean":
            return (e * b).sum(1, keepdim=True) / b.sum(1, keepdim=True).clamp(min=1.0)
        if self.pooling == "lse":
            r = self.log_r.exp()
            count = b.sum(1, keepdim=True).clamp(min=1.0)
            return (torch.logsumexp(r * e, dim=1, keepdim=True) - torch.log(count)) / r
        a = self.attention(f).flatten(1)
        a = a * b + OUTSIDE * (1.0 - b)
        return (torch.softmax(a, dim=1) * e).sum(1, keepdim=True)


#: The evidence map: one channel at ``evidence_level`` resolution, masked to the brain.
GRADCAM_LAYER = "evidence"


def build(
    grid: tuple[int, int, int],
    width: float,
    *,
    spacing: Sequence[float] = (4.0, 4.0, 4.0),
    channels: Sequence[int] | None = None,
    asymmetry: bool = True,
    asymmetry_tolerance_mm: float = 12.0,
    asymmetry_smoothing_mm: float = 4.0,
    asymmetry_peak_smoothing_mm: float | None = None,
    asymmetry_mode: str = "difference",
    asymmetry_ratio_floor: float = RATIO_FLOOR,
    asymmetry_contrast_gamma: float = 0.0,
    asymmetry_contrast_mm: float = 4.0,
    asymmetry_mirror: str = "grid",
    evidence_prior: bool = True,
    pooling: str = "max",
    evidence_level: int = 1,
    hidden: int = 16,
    dropout: float = 0.0,
    lse_r: float = 4.0,
) -> LesionNet:
    """Validate the options (ConfigError naming the bad one) and build the backbone.

    ``channels`` defaults to :data:`DEFAULT_CHANNELS` scaled by ``width``; given explicitly it is used
    as is (``width`` must then stay 1).
    """
    if channels is None:
        channels = [max(1, round(c * width)) for c in DEFAULT_CHANNELS]
    else:
        if width != 1.0:
            raise ConfigError("model 'lesionnet': give either width or channels, not both")
        ok = isinstance(channels, (list, tuple)) and 2 <= len(channels) <= 5
        if not ok or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"model 'lesionnet': channels must be 2-5 positive integers (one per level), got {channels!r}"
            )
    for name, flag in (("asymmetry", asymmetry), ("evidence_prior", evidence_prior)):
        if not isinstance(flag, bool):
            raise ConfigError(f"model 'lesionnet': {name} must be true or false, got {flag!r}")
    if evidence_prior and not asymmetry:
        raise ConfigError(
            "model 'lesionnet': evidence_prior needs asymmetry = true (or set evidence_prior = false)"
        )
    for name, mm in (
        ("asymmetry_tolerance_mm", asymmetry_tolerance_mm),
        ("asymmetry_smoothing_mm", asymmetry_smoothing_mm),
        ("asymmetry_contrast_mm", asymmetry_contrast_mm),
        (
            "asymmetry_peak_smoothing_mm",
            0 if asymmetry_peak_smoothing_mm is None else asymmetry_peak_smoothing_mm,
        ),
    ):
        if isinstance(mm, bool) or not isinstance(mm, (int, float)) or not 0 <= mm <= 50:
            raise ConfigError(f"model 'lesionnet': {name} must be a distance in [0, 50] mm, got {mm!r}")
    if asymmetry_mode not in ASYMMETRY_MODES:
        raise ConfigError(
            f"model 'lesionnet': asymmetry_mode must be one of {', '.join(ASYMMETRY_MODES)}, "
            f"got {asymmetry_mode!r}"
        )
    ok = isinstance(asymmetry_ratio_floor, (int, float)) and not isinstance(asymmetry_ratio_floor, bool)
    if not ok or not 0 < asymmetry_ratio_floor <= 10:
        raise ConfigError(
            "model 'lesionnet': asymmetry_ratio_floor must be in (0, 10] (input units), "
            f"got {asymmetry_ratio_floor!r}"
        )
    ok = isinstance(asymmetry_contrast_gamma, (int, float)) and not isinstance(asymmetry_contrast_gamma, bool)
    if not ok or not 0 <= asymmetry_contrast_gamma <= 2:
        raise ConfigError(
            f"model 'lesionnet': asymmetry_contrast_gamma must be in [0, 2], got {asymmetry_contrast_gamma!r}"
        )
    if asymmetry_contrast_gamma and asymmetry_mode != "ratio":
        raise ConfigError(
            "model 'lesionnet': asymmetry_contrast_gamma needs asymmetry_mode = \"ratio\" "
            "(the term scales a ratio)"
        )
    if asymmetry_mirror not in MIRRORS:
        raise ConfigError(
            f"model 'lesionnet': asymmetry_mirror must be one of {', '.join(MIRRORS)}, "
            f"got {asymmetry_mirror!r}"
        )
    if pooling not in POOLINGS:
        raise ConfigError(f"model 'lesionnet': pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if isinstance(evidence_level, bool) or not isinstance(evidence_level, int):
        raise ConfigError(f"model 'lesionnet': evidence_level must be an integer, got {evidence_level!r}")
    if not 0 <= evidence_level < len(channels):
        raise ConfigError(
            f"model 'lesionnet': evidence_level must be in 0..{len(channels) - 1} "
            f"(one of the {len(channels)} levels), got {evidence_level}"
        )
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ConfigError(f"model 'lesionnet': hidden must be a positive integer, got {hidden!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model 'lesionnet': dropout must be in [0, 1), got {dropout!r}")
    if isinstance(lse_r, bool) or not isinstance(lse_r, (int, float)) or not 0 < lse_r <= 100:
        raise ConfigError(f"model 'lesionnet': lse_r must be in (0, 100], got {lse_r!r}")
    return LesionNet(
        grid,
        tuple(channels),
        spacing=tuple(float(v) for v in spacing),
        asymmetry=asymmetry,
        asymmetry_tolerance_mm=float(asymmetry_tolerance_mm),
        asymmetry_smoothing_mm=float(asymmetry_smoothing_mm),
        asymmetry_peak_smoothing_mm=(
            None if asymmetry_peak_smoothing_mm is None else float(asymmetry_peak_smoothing_mm)
        ),
        asymmetry_mode=asymmetry_mode,
        asymmetry_ratio_floor=float(asymmetry_ratio_floor),
        asymmetry_contrast_gamma=float(asymmetry_contrast_gamma),
        asymmetry_contrast_mm=float(asymmetry_contrast_mm),
        asymmetry_mirror=asymmetry_mirror,
        evidence_prior=evidence_prior,
        pooling=pooling,
        evidence_level=evidence_level,
        hidden=hidden,
        dropout=float(dropout),
        lse_r=float(lse_r),
    )
