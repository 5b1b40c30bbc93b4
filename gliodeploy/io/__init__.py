"""PET input: NIfTI (+ BIDS-PET sidecar, participants.tsv) and DICOM series, converted to SUVbw.

Light side: SimpleITK, pydicom and numpy only (never torch, scipy or nibabel).
"""

from __future__ import annotations

from gliodeploy.io.dicom_writer import write_pet_dicom_series
from gliodeploy.io.loader import is_nifti, load_pet
from gliodeploy.io.nifti_writer import write_pet_nifti
from gliodeploy.io.suv import HALF_LIVES_S, compute_suv_factor, half_life_for
from gliodeploy.io.volume import UNITS_SUV, UNITS_UNKNOWN, PetVolume, check_volume

__all__ = [
    "HALF_LIVES_S",
    "UNITS_SUV",
    "UNITS_UNKNOWN",
    "PetVolume",
    "check_volume",
    "compute_suv_factor",
    "half_life_for",
    "is_nifti",
    "load_pet",
    "write_pet_dicom_series",
    "write_pet_nifti",
]
