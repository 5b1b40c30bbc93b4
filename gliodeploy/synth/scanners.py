"""The four simulated PET scanners (two sites) and the three cohort sizes.

Numbers follow /work/shared/notes/fdopa-pet.md: NEMA spatial resolution near the centre, clinical
post-filters, native voxel sizes and axial fields of view of each system. The external site
("Paris") has a cross-calibration offset of a few per cent, the size of site effects reported for
static FET/FDOPA parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gliodeploy.errors import ConfigError

TRAIN_SITE = "Nancy"
TEST_SITE = "Paris"


@dataclass(frozen=True)
class Site:
    """An imaging centre: its scanners, recurrence prevalence and calibration offset."""

    name: str
    scanners: tuple[str, str]
    recurrence_fraction: float  # the study: 118/164 = 72 % (Nancy), 26/32 = 81 % (Paris)
    calibration: float  # multiplies Bq/mL: dose-calibrator / scanner cross-calibration offset


@dataclass(frozen=True)
class Scanner:
    """One PET system as reconstructed clinically for static brain FDOPA.

    ``noise`` is the relative standard deviation of a (2 mm)^3 voxel at SUV 1 before the
    post-filter for a reference count level (2 MBq/kg, 10 min frame, 20 min delay); digital
    systems with better sensitivity/TOF have less.
    """

    name: str
    site: str
    manufacturer: str
    model_name: str
    psf_fwhm_mm: float
    filter_fwhm_mm: float
    filter_type: str
    voxel_mm: tuple[float, float, float]
    matrix: tuple[int, int, int]
    recon_method: str
    recon_labels: tuple[str, ...]
    recon_units: tuple[str, ...]
    recon_values: tuple[float, ...]
    noise: float
    calibration: float = 1.0

    @property
    def resolution_fwhm_mm(self) -> float:
        """Final image resolution: PSF and post-filter added in quadrature."""
        return math.hypot(self.psf_fwhm_mm, self.filter_fwhm_mm)


SCANNERS: dict[str, Scanner] = {
    s.name: s
    for s in (
        Scanner(
            name="Biograph",
            site=TRAIN_SITE,
            manufacturer="Siemens",
            model_name="Biograph mCT Flow",
            psf_fwhm_mm=4.3,
            filter_fwhm_mm=2.0,
            filter_type="Gaussian",
            voxel_mm=(2.036, 2.036, 2.027),
            matrix=(128, 128, 109),  # 261 x 261 x 221 mm (the mCT axial FOV)
            recon_method="OSEM3D TOF PSF (TrueX)",
            recon_labels=("subsets", "iterations"),
            recon_units=("none", "none"),
            recon_values=(21, 3),
            noise=0.30,
            calibration=1.0,
        ),
        Scanner(
            name="Vereos",
            site=TRAIN_SITE,
            manufacturer="Philips",
            model_name="Vereos PET/CT",
            psf_fwhm_mm=4.0,
            filter_fwhm_mm=0.0,
            filter_type="none",
            voxel_mm=(2.0, 2.0, 2.0),
            matrix=(128, 128, 100),  # 256 x 256 x 200 mm
            recon_method="BLOB-OS-TF",
            recon_labels=("subsets", "iterations"),
            recon_units=("none", "none"),
            recon_values=(15, 3),
            noise=0.24,
            calibration=0.99,
        ),
        Scanner(
            name="DiscoveryMI",
            site=TEST_SITE,
            manufacturer="GE MEDICAL SYSTEMS",
            model_name="Discovery MI",
            psf_fwhm_mm=4.0,
            filter_fwhm_mm=3.0,
            filter_type="Gaussian",
            voxel_mm=(1.953, 1.953, 2.79),
            matrix=(128, 128, 80),  # 250 x 250 x 223 mm
            recon_method="VPFX-S (OSEM TOF PSF)",
            recon_labels=("subsets", "iterations"),
            recon_units=("none", "none"),
            recon_values=(16, 4),
            noise=0.26,
            calibration=1.01,
        ),
        Scanner(
            name="Vision",
            site=TEST_SITE,
            manufacturer="Siemens",
            model_name="Biograph Vision 600",
            psf_fwhm_mm=3.5,
            filter_fwhm_mm=2.0,
            filter_type="Gaussian",
            voxel_mm=(1.65, 1.65, 1.65),
            matrix=(152, 152, 130),  # 251 x 251 x 215 mm
            recon_method="OSEM3D TOF PSF",
            recon_labels=("subsets", "iterations"),
            recon_units=("none", "none"),
            recon_values=(5, 8),
            noise=0.20,
            calibration=1.0,
        ),
    )
}

SITES: dict[str, Site] = {
    TRAIN_SITE: Site(TRAIN_SITE, ("Biograph", "Vereos"), recurrence_fraction=118 / 164, calibration=1.0),
    TEST_SITE: Site(TEST_SITE, ("DiscoveryMI", "Vision"), recurrence_fraction=26 / 32, calibration=1.04),
}


@dataclass(frozen=True)
class SizeSpec:
    """A cohort size: output voxels are the scanner's times ``zoom``; physics run on ``work_mm`` voxels."""

    name: str
    zoom: int
    work_mm: int


SIZES: dict[str, SizeSpec] = {
    "full": SizeSpec("full", zoom=1, work_mm=2),  # native voxels (~2 mm), ~1.8 M voxels per scan
    "small": SizeSpec("small", zoom=2, work_mm=3),  # ~4 mm voxels
    "tiny": SizeSpec("tiny", zoom=4, work_mm=4),  # ~8 mm voxels, for tests
}


def get_scanner(name: str) -> Scanner:
    """The scanner called ``name``; an unknown name raises :class:`ConfigError`."""
    try:
        return SCANNERS[name]
    except KeyError:
        raise ConfigError(f"unknown scanner {name!r}; known: {', '.join(SCANNERS)}") from None


def get_size(name: str) -> SizeSpec:
    """The size preset called ``name``; an unknown name raises :class:`ConfigError`."""
    try:
        return SIZES[name]
    except KeyError:
        raise ConfigError(f"unknown size {name!r}; choose one of {', '.join(SIZES)}") from None


def output_grid(scanner: Scanner, size: SizeSpec) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Voxel size (mm) and matrix of ``scanner``'s images at ``size`` (same field of view)."""
    spacing = tuple(v * size.zoom for v in scanner.voxel_mm)
    matrix = tuple(math.ceil(n / size.zoom) for n in scanner.matrix)
    return spacing, matrix  # type: ignore[return-value]
