"""One synthetic static 18F-FDOPA PET scan: uptake model, lesion, scanner physics, Bq/mL conversion.

Pipeline (working grid in template space, then the scanner's grid):

1. healthy uptake: grey/white matter contrast, hot striatum, skull, scalp, face and neck;
2. lesion: uptake ratio, size, edge width, texture, necrotic core and number of foci are drawn from
   the class-conditional, overlapping distributions of :mod:`gliodeploy.synth.lesion` (recurrence
   tends to be hotter and nodular, treatment-related change cooler and more diffuse; the label fixes
   none of them);
3. optional cold resection cavity beside the lesion;
4. scanner physics: PSF blur, uptake-dependent (Poisson-like) noise, post-filter, random head pose
   in a larger field of view, resampling onto the scanner's voxels;
5. SUV -> Bq/mL with the subject's weight, injected dose decayed to scan start and the site's
   calibration offset.

Every random draw comes from generators seeded by ``(seed, index)`` only. Draws that do not
depend on the label (demographics, timing, pose, lesion site, noise) use their own generators,
so no nuisance variable carries label information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

from gliodeploy.errors import ConfigError
from gliodeploy.synth.anatomy import Anatomy, load_anatomy
from gliodeploy.synth.lesion import DEFAULT_LESION_MODEL, LesionDraw, LesionModel
from gliodeploy.synth.scanners import SITES, Scanner, SizeSpec, get_scanner, get_size, output_grid

F18_HALF_LIFE_S = 6586.2
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Centre of the scanner field of view before the random head shift (LPS mm, template space).
FOV_CENTRE_LPS = (0.0, 18.0, 0.0)
#: Reference count level for the scanners' noise figures: 2 MBq/kg, 20 min delay, 10 min frame.
_REF_COUNTS = 2.0 * 2.0 ** (-1200.0 / F18_HALF_LIFE_S) * 600.0
#: Minimal noise correlation of an iterative reconstruction (mm FWHM), also when no post-filter is set.
_NOISE_CORRELATION_MM = 2.0

#: 10-90 % width of a logistic edge 1 / (1 + exp(d / s)) in units of its scale s.
_LOGISTIC_10_90 = 2.0 * math.log(9.0)
#: Candidate directions tried to put a satellite focus inside the brain.
_SATELLITE_TRIES = 12
#: SUV of face/neck soft tissue at body factor 1 (the body factor spans 0.8-1.2).
_SOFT_TISSUE_SUV = 0.55


@dataclass(frozen=True)
class SubjectTruth:
    """Ground truth and acquisition facts of one synthetic subject.

    Positions are LPS world millimetres of the written image (SimpleITK physical space).
    ``tbr_*`` are ratios to the healthy-brain mean SUV on the noise-free, unblurred uptake map;
    ``tsr_true`` is lesion SUVmax over the striatal mean SUV. ``lesion_center_mm`` is the centre of
    the main focus, which holds the lesion's TBRmax; satellite foci (``n_foci`` > 1) lie beside it
    and are part of ``lesion_mask`` and ``lesion_volume_ml``. ``lesion_radius_mm``,
    ``edge_width_mm`` (intrinsic 10-90 %, before scanner blur), ``texture_amplitude`` and
    ``necrosis_fraction`` (necrotic core's share of the main focus volume, 0 = none) are the drawn
    shape features of :mod:`gliodeploy.synth.lesion`.
    """

    subject: str
    index: int
    true_label: int
    scanner: str
    site: str
    size: str
    weight_kg: float
    age: int
    sex: str
    injected_dose_bq: float
    delay_s: int
    frame_s: int
    healthy_brain_suv: float
    striatum_suv: float
    tbr_max_true: float
    tbr_mean_true: float
    tsr_true: float
    lesion_center_mm: tuple[float, float, float]
    contralateral_center_mm: tuple[float, float, float]
    lesion_volume_ml: float
    lesion_radius_mm: float
    edge_width_mm: float
    texture_amplitude: float
    necrosis_fraction: float
    n_foci: int
    cavity: bool
    head_translation_mm: tuple[float, float, float]
    head_rotation_deg: tuple[float, float, float]
    calibration: float
    lesion_mask: sitk.Image = field(repr=False, compare=False)


class SyntheticSubject(NamedTuple):
    """What :func:`generate_subject` returns: the image (Bq/mL), its BIDS-PET sidecar and the truth."""

    image: sitk.Image
    sidecar: dict[str, Any]
    truth: SubjectTruth


def subject_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators (nuisance, lesion shape, noise) for subject ``index`` of cohort ``seed``."""
    children = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


def _soft_ellipsoid_q(anat: Anatomy, box: tuple[slice, ...], centre, axes) -> np.ndarray:
    """Normalised ellipsoid radius q (1 on the surface) on the voxels of ``box``."""
    g = [(anat.coords(a, box[a].start, box[a].stop) - centre[a]) / axes[a] for a in range(3)]
    return np.sqrt(g[0][:, None, None] ** 2 + g[1][None, :, None] ** 2 + g[2][None, None, :] ** 2)


def _box(anat: Anatomy, centre, half_mm: float) -> tuple[slice, ...]:
    lo = anat.index_of(np.asarray(centre) - half_mm)
    hi = anat.index_of(np.asarray(centre) + half_mm) + 1
    return tuple(slice(max(int(lo[a]), 0), min(int(hi[a]), anat.shape[a])) for a in range(3))


class _Focus(NamedTuple):
    """One uptake focus: centre (LPS mm), semi-axes (mm) and peak excess uptake relative to the main focus."""

    centre: np.ndarray
    axes: np.ndarray
    uptake: float


def _satellites(
    anat: Anatomy, rng: np.random.Generator, model: LesionModel, centre: np.ndarray, drawn: LesionDraw
) -> list[_Focus]:
    """The ``n_foci - 1`` satellite foci beside the main one, centred inside the brain off the striatum."""
    out = []
    for _ in range(drawn.n_foci - 1):
        rel = float(rng.uniform(*model.satellite_radius))
        uptake = float(rng.uniform(*model.satellite_uptake))
        distance = float(rng.uniform(*model.satellite_distance)) * drawn.radius_mm * (1.0 + rel)
        axes = rel * drawn.radius_mm * rng.uniform(0.8, 1.2, 3)
        dirs = rng.normal(size=(_SATELLITE_TRIES, 3))
        candidates = centre + distance * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        idx = np.clip(anat.index_of(candidates), 0, np.array(anat.shape) - 1)
        score = anat.brain[tuple(idx.T)] - 2.0 * anat.striatum[tuple(idx.T)]
        good = np.flatnonzero(score > 0.5)
        out.append(_Focus(candidates[good[0] if good.size else int(np.argmax(score))], axes, uptake))
    return out


def _union_box(anat: Anatomy, foci: list[_Focus], margin_mm: float) -> tuple[slice, ...]:
    """The working-grid box holding every focus with its edge (``margin_mm`` beyond the largest axis)."""
    boxes = [_box(anat, f.centre, float(f.axes.max()) * 1.8 + margin_mm) for f in foci]
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _box_shape(box: tuple[slice, ...]) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in box)  # type: ignore[return-value]


def _smooth(array: np.ndarray, spacing: float, fwhm_mm: float) -> np.ndarray:
    """Gaussian filter of ``fwhm_mm`` (physical units) with SimpleITK; returns float32 ``[x, y, z]``."""
    if fwhm_mm <= 0:
        return array
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing((spacing,) * 3)
    sigma = fwhm_mm * FWHM_TO_SIGMA
    out = sitk.DiscreteGaussian(img, sigma**2, 64, 0.01, True)
    return sitk.GetArrayViewFromImage(out).transpose(2, 1, 0).astype(np.float32)


def _healthy_uptake(
    anat: Anatomy, brain_suv: float, gm_wm: float, striatum_suv: float, body: float
) -> np.ndarray:
    """Noise-free SUV map without lesion; healthy parenchyma (no striatum) averages ``brain_suv``."""
    tissue = anat.gm * gm_wm + anat.wm + 0.15 * anat.csf
    reference = anat.healthy_region
    scale = brain_suv / float(tissue[reference].mean() / anat.brain[reference].mean())
    brain = tissue * scale
    brain = brain * (1.0 - anat.striatum) + anat.striatum * striatum_suv
    # Extracranial FDOPA uptake stays below brain grey matter: bone is cold, and face/neck muscle and
    # soft tissue (~0.4-0.65 SUV) take up less than healthy cortex (~1.2-1.5 SUV).
    extracranial = body * (0.35 * anat.skull + 0.75 * anat.scalp + _SOFT_TISSUE_SUV * anat.soft_tissue)
    return (brain + extracranial).astype(np.float32)


def generate_subject(
    index: int,
    *,
    label: int,
    scanner: str,
    seed: int = 0,
    size: str = "full",
    subject: str | None = None,
    lesion_model: LesionModel | None = None,
) -> SyntheticSubject:
    """Simulate one static FDOPA PET scan in Bq/mL.

    Args:
        index: subject index in the cohort; with ``seed`` it fixes every random draw.
        label: true diagnosis, 1 = recurrence, 0 = treatment-related change.
        scanner: one of :data:`gliodeploy.synth.scanners.SCANNERS` (its site follows).
        seed: cohort seed.
        size: ``full`` (native ~2 mm voxels), ``small`` (~4 mm) or ``tiny`` (~8 mm).
        subject: identifier stored in the truth (default ``sub-<index+1:03d>``).
        lesion_model: class-conditional lesion distributions (default
            :data:`gliodeploy.synth.lesion.DEFAULT_LESION_MODEL`).

    Returns:
        :class:`SyntheticSubject` ``(image, sidecar, truth)``; the same arguments give
        byte-identical images.
    """
    if label not in (0, 1):
        raise ConfigError(f"label must be 0 (TRC) or 1 (recurrence), got {label!r}")
    spec: Scanner = get_scanner(scanner)
    size_spec: SizeSpec = get_size(size)
    anat = load_anatomy(size_spec.work_mm)
    sp = anat.spacing
    nuis, les, noise_rng = subject_rngs(seed, index)
    subject = subject or f"sub-{index + 1:03d}"

    # --- nuisance draws (never depend on the label) ---------------------------------------------
    sex = "M" if nuis.random() < 0.6 else "F"
    age = int(np.clip(round(nuis.normal(52.0, 13.0)), 20, 85))
    weight = round(float(nuis.uniform(50.0, 110.0)), 1)
    dose_mbq = round(weight * 2.0 * float(nuis.uniform(0.9, 1.1)), 2)
    delay_s = int(nuis.integers(600, 1801))
    frame_s = 600
    time_zero_s = int(nuis.integers(8 * 3600, 16 * 3600))
    translation = (nuis.uniform(-20.0, 20.0), nuis.uniform(-20.0, 20.0), nuis.uniform(-15.0, 15.0))
    rotation = np.clip(nuis.normal(0.0, 5.0, 3), -15.0, 15.0)
    brain_suv = float(np.clip(nuis.normal(1.25, 0.15), 0.9, 1.7))
    gm_wm = float(nuis.uniform(1.2, 1.45))
    striatum_suv = brain_suv * float(np.clip(nuis.normal(2.3, 0.25), 1.7, 3.0))
    body = float(nuis.uniform(0.8, 1.2))
    left = nuis.random() < 0.5
    sites = anat.lesion_sites[(anat.lesion_sites[:, 0] > 0) == left]
    centre = sites[int(nuis.integers(len(sites)))] + nuis.uniform(-sp / 2, sp / 2, 3)
    anisotropy = nuis.uniform(0.75, 1.25, 3)
    has_cavity = bool(nuis.random() < 0.7)
    cavity_radius = float(nuis.uniform(5.0, 13.0))
    direction = nuis.normal(size=3)
    direction /= np.linalg.norm(direction)

    # --- lesion draws: the only draws that depend on the label (gliodeploy.synth.lesion) -----------
    lesion_model = lesion_model or DEFAULT_LESION_MODEL
    drawn = lesion_model.draw(les, label)
    axes = drawn.radius_mm * anisotropy
    foci = [_Focus(centre, axes, 1.0), *_satellites(anat, les, lesion_model, centre, drawn)]

    # --- healthy brain, lesion and cavity on the working grid ----------------------------------
    ideal = _healthy_uptake(anat, brain_suv, gm_wm, striatum_suv, body)
    edge_scale = drawn.edge_width_mm / _LOGISTIC_10_90  # logistic scale of the edge (mm)
    box = _union_box(anat, foci, 5.0 * edge_scale + 2 * sp)
    texture = _smooth(
        les.standard_normal(_box_shape(box)).astype(np.float32), sp, lesion_model.texture_fwhm_mm
    )
    texture = np.clip(1.0 + drawn.texture_amplitude * texture / max(float(texture.std()), 1e-6), 0.4, 1.8)
    weight_map = np.zeros(_box_shape(box), dtype=np.float32)
    lesion = np.zeros(anat.shape, dtype=bool)
    for k, focus in enumerate(foci):
        q = _soft_ellipsoid_q(anat, box, focus.centre, focus.axes)
        radius = float(np.mean(focus.axes))
        profile = 1.0 / (1.0 + np.exp(np.clip((q - 1.0) * radius / edge_scale, -50, 50)))
        raw = profile * texture * anat.brain[box]
        if k == 0 and drawn.necrosis_fraction > 0:  # cold core of the main focus
            core = drawn.necrosis_fraction ** (1.0 / 3.0)  # radius share of a core with that volume share
            raw *= 1.0 - lesion_model.necrosis_depth * np.exp(-((q / core) ** 2))
        # Each focus peaks at its own relative uptake: the main focus (1.0) holds the lesion's TBRmax.
        weight_map = np.maximum(weight_map, focus.uptake * raw / max(float(raw.max()), 1e-6))
        lesion[box] |= (profile >= 0.5) & (anat.brain[box] > 0.5)
    ideal[box] = ideal[box] * (1.0 - weight_map) + brain_suv * drawn.tbr_max * weight_map
    if has_cavity:
        cav_centre = centre + direction * (0.85 * float(axes.mean()) + cavity_radius)
        cbox = _box(anat, cav_centre, cavity_radius + 3 * sp)
        cq = _soft_ellipsoid_q(anat, cbox, cav_centre, (cavity_radius,) * 3)
        cav = anat.brain[cbox] / (1.0 + np.exp(np.clip((cq - 1.0) * cavity_radius / 1.0, -50, 50)))
        ideal[cbox] = ideal[cbox] * (1.0 - cav) + 0.15 * brain_suv * cav
        lesion[cbox] &= cav < 0.5
    lesion_values = ideal[lesion]
    tbr_max = float(lesion_values.max()) / brain_suv
    tbr_mean = float(lesion_values.mean()) / brain_suv
    tsr = float(lesion_values.max()) / striatum_suv

    # --- scanner physics -----------------------------------------------------------------------
    out_spacing, matrix = output_grid(spec, size_spec)
    out_voxel = float(np.mean(out_spacing))
    post = math.hypot(
        max(spec.filter_fwhm_mm, _NOISE_CORRELATION_MM), math.sqrt(max(out_voxel**2 - sp**2, 0.0))
    )
    signal_fwhm = math.sqrt(
        max(spec.resolution_fwhm_mm**2 - max(spec.filter_fwhm_mm, _NOISE_CORRELATION_MM) ** 2, 0)
    )
    blurred = _smooth(ideal, sp, signal_fwhm)
    decay = 2.0 ** (-delay_s / F18_HALF_LIFE_S)
    counts = (dose_mbq / weight) * decay * frame_s / _REF_COUNTS
    sd = spec.noise * math.sqrt((2.0 / sp) ** 3 / counts)
    noisy = blurred + sd * np.sqrt(np.maximum(blurred, 0.0)) * noise_rng.standard_normal(
        anat.shape, dtype=np.float32
    )
    suv = np.maximum(_smooth(noisy, sp, post), 0.0)

    head = sitk.Euler3DTransform(FOV_CENTRE_LPS, *(math.radians(float(r)) for r in rotation), translation)
    to_template = head.GetInverse()
    grid = sitk.Image([int(m) for m in matrix], sitk.sitkFloat32)
    grid.SetSpacing(out_spacing)
    grid.SetOrigin(tuple(FOV_CENTRE_LPS[a] - (matrix[a] - 1) * out_spacing[a] / 2.0 for a in range(3)))
    calibration = SITES[spec.site].calibration * spec.calibration
    bqml_per_suv = dose_mbq * 1e6 * decay / (weight * 1000.0) * calibration
    image = sitk.Resample(
        anat.to_image(suv * np.float32(bqml_per_suv)), grid, to_template, sitk.sitkLinear, 0.0
    )
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.Resample(
        anat.to_image(lesion.astype(np.uint8)), grid, to_template, sitk.sitkNearestNeighbor, 0
    )
    mask = sitk.Cast(mask, sitk.sitkUInt8)

    mirror = (-float(centre[0]), float(centre[1]), float(centre[2]))
    truth = SubjectTruth(
        subject=subject,
        index=int(index),
        true_label=int(label),
        scanner=spec.name,
        site=spec.site,
        size=size_spec.name,
        weight_kg=weight,
        age=age,
        sex=sex,
        injected_dose_bq=dose_mbq * 1e6,
        delay_s=delay_s,
        frame_s=frame_s,
        healthy_brain_suv=brain_suv,
        striatum_suv=striatum_suv,
        tbr_max_true=tbr_max,
        tbr_mean_true=tbr_mean,
        tsr_true=tsr,
        lesion_center_mm=tuple(head.TransformPoint(tuple(float(c) for c in centre))),  # type: ignore[arg-type]
        contralateral_center_mm=tuple(head.TransformPoint(mirror)),  # type: ignore[arg-type]
        lesion_volume_ml=float(lesion.sum()) * sp**3 / 1000.0,
        lesion_radius_mm=drawn.radius_mm,
        edge_width_mm=drawn.edge_width_mm,
        texture_amplitude=drawn.texture_amplitude,
        necrosis_fraction=drawn.necrosis_fraction,
        n_foci=drawn.n_foci,
        cavity=has_cavity,
        head_translation_mm=tuple(float(t) for t in translation),  # type: ignore[arg-type]
        head_rotation_deg=tuple(float(r) for r in rotation),  # type: ignore[arg-type]
        calibration=calibration,
        lesion_mask=mask,
    )
    return SyntheticSubject(image, pet_sidecar(spec, dose_mbq, delay_s, frame_s, time_zero_s), truth)


def pet_sidecar(
    spec: Scanner, dose_mbq: float, delay_s: int, frame_s: int, time_zero_s: int
) -> dict[str, Any]:
    """The BIDS-PET sidecar of a static scan decay-corrected to scan start (times relative to injection)."""
    lam = math.log(2.0) / F18_HALF_LIFE_S
    hh, rem = divmod(time_zero_s, 3600)
    return {
        "Manufacturer": spec.manufacturer,
        "ManufacturersModelName": spec.model_name,
        "InstitutionName": spec.site,
        "BodyPart": "Brain",
        "Units": "Bq/mL",
        "TracerName": "FDOPA",
        "TracerRadionuclide": "F18",
        "TracerRadLex": "RID11634",
        "InjectedRadioactivity": dose_mbq,
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a",
        "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a",
        "SpecificRadioactivityUnits": "n/a",
        "ModeOfAdministration": "bolus",
        "TimeZero": f"{hh:02d}:{rem // 60:02d}:{rem % 60:02d}",
        "InjectionStart": 0,
        "ScanStart": delay_s,
        "FrameTimesStart": [delay_s],
        "FrameDuration": [frame_s],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": delay_s,
        # Average decay over the frame, relative to its start (the frame is corrected to scan start).
        "DecayCorrectionFactor": [round(lam * frame_s / (1.0 - math.exp(-lam * frame_s)), 6)],
        "AttenuationCorrection": "CT-based",
        "ScatterCorrectionMethod": "single scatter simulation",
        "ReconMethodName": spec.recon_method,
        "ReconMethodParameterLabels": list(spec.recon_labels),
        "ReconMethodParameterUnits": list(spec.recon_units),
        "ReconMethodParameterValues": list(spec.recon_values),
        "ReconFilterType": spec.filter_type,
        "ReconFilterSize": spec.filter_fwhm_mm,
    }
