"""A corpus of unusable PET inputs, written on demand into a test's folder (nothing big is committed).

Each :class:`BadInput` pairs a path with the words its error must contain: the path's name (so the user
knows WHICH file) and the problem (so the user knows WHAT is wrong). NIfTI cases carry a BIDS-PET sidecar
in SUV units (``g/ml``) so that the fault under test, not a missing SUV field, is what the reader meets;
the "no sidecar" case is the one without it. ``good_dicom`` writes a complete DICOM PET series of a head
phantom that preprocesses on the tiny grid, for the "still works afterwards" checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gliodeploy.io import write_pet_dicom_series, write_pet_nifti

INJECTION = datetime(2024, 3, 1, 10, 0, 0)
SERIES = datetime(2024, 3, 1, 10, 20, 0)
SUV_SIDECAR = {"Modality": "PT", "Units": "g/ml", "TracerName": "FDOPA", "TracerRadionuclide": "F18"}
# Bq/mL per SUV unit for a 70 kg patient injected with 185 MBq, 20 min before a decay-corrected scan.
BQML_PER_SUV = 185e6 / 70_000.0


@dataclass(frozen=True)
class BadInput:
    """One unusable input and the fragments (regular expressions) its error message must contain."""

    name: str
    path: Path
    problem: str  # regex: the problem, in the reader's words
    named: str = ""  # the name the message must show, when not the path's own (e.g. its sidecar)

    def matches(self, text: str) -> bool:
        """True if ``text`` names this input (file/folder name) and its problem."""
        return (self.named or self.path.name) in text and re.search(self.problem, text) is not None


def head_phantom(n: int = 40, spacing: float = 5.0, seed: int = 0) -> np.ndarray:
    """SUV volume [z, y, x]: an ellipsoid brain (SUV ~1.2), a hot lesion (3.5), smooth, light noise."""
    index = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(np.float64)
    d = (index - (n / 2 - 0.5)) * spacing
    brain = ((d / [55.0, 70.0, 60.0]) ** 2).sum(-1) <= 1
    values = np.where(brain, 1.2, 0.03)
    values[np.linalg.norm(d - [15.0, 10.0, 20.0], axis=-1) < 10] = 3.5
    values = values + np.random.default_rng(seed).normal(0, 0.01, values.shape)
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(values.astype(np.float32)), 1.5)
    return np.clip(sitk.GetArrayFromImage(image), 0.0, None).astype(np.float32)


def _image(values: np.ndarray, spacing: float = 5.0) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((spacing,) * values.ndim)
    image.SetOrigin(tuple(-spacing * s / 2 for s in reversed(values.shape)))
    return image


def good_dicom(folder: Path, *, weight_kg: float | None = 70.0, modality: str = "PT", seed: int = 0) -> Path:
    """A complete DICOM PET series (Bq/mL, every SUV tag) of :func:`head_phantom`."""
    bqml = _image(head_phantom(seed=seed) * np.float32(BQML_PER_SUV * 2.0 ** (-1200 / 6586.2)))
    return write_pet_dicom_series(
        bqml,
        folder,
        weight_kg=weight_kg,
        injected_dose_bq=185e6,
        injection_datetime=INJECTION,
        series_datetime=SERIES,
        modality=modality,
        uid_seed=folder.name,
    )


def _nifti(path: Path, values: np.ndarray, spacing: float = 5.0, sidecar: dict | None = SUV_SIDECAR) -> Path:
    image = _image(values, spacing)
    if values.ndim == 3:
        return write_pet_nifti(image, path, dict(sidecar) if sidecar else None)
    sitk.WriteImage(image, str(path))  # 2D: the project's writer refuses it, as it should
    if sidecar:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def write_corpus(root: Path) -> dict[str, BadInput]:
    """Write every bad input under ``root``; returns them by name."""
    root.mkdir(parents=True, exist_ok=True)
    head = head_phantom()
    cases: list[BadInput] = []

    good = _nifti(root / "truncated.nii.gz", head)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    cases.append(BadInput("truncated_gz", good, r"truncated"))
    raw = _nifti(root / "truncated.nii", head)
    raw.write_bytes(raw.read_bytes()[:-1000])
    cases.append(BadInput("truncated_nii", raw, r"truncated: \d+ of the \d+ bytes"))

    fake = root / "notnifti.nii.gz"
    fake.write_text("patient,weight\nP001,72\n")
    cases.append(BadInput("not_nifti", fake, r"cannot read NIfTI"))

    cases.append(BadInput("flat_2d", _nifti(root / "flat2d.nii.gz", head[20]), r"3D volume"))
    cases.append(BadInput("nan", _nifti(root / "nan.nii.gz", np.full_like(head, np.nan)), r"NaN|constant"))
    cases.append(BadInput("zeros", _nifti(root / "zeros.nii.gz", np.zeros_like(head)), r"constant"))

    dyn = root / "dynamic4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([_image(head)] * 3), str(dyn))
    dyn.with_name("dynamic4d.json").write_text(json.dumps(SUV_SIDECAR))
    cases.append(BadInput("dynamic_4d", dyn, r"4D dynamic PET \(3 frames"))

    cases.append(
        BadInput("no_sidecar", _nifti(root / "nosidecar.nii.gz", head, sidecar=None), r"no BIDS sidecar")
    )
    cases.append(BadInput("huge_spacing", _nifti(root / "huge.nii.gz", head, spacing=500.0), r"spacing"))
    mr = _nifti(root / "mr.nii.gz", head, sidecar={**SUV_SIDECAR, "Modality": "MR"})
    cases.append(BadInput("mr_nifti", mr, r"Modality is 'MR', not PET", named="mr.json"))

    cases.append(BadInput("dicom_no_weight", good_dicom(root / "noweight", weight_kg=None), r"PatientWeight"))
    cases.append(BadInput("dicom_ct", good_dicom(root / "ctseries", modality="CT"), r"modality CT, not PET"))
    cases.append(BadInput("dicom_mr", good_dicom(root / "mrseries", modality="MR"), r"modality MR, not PET"))

    empty = root / "emptyfolder"
    empty.mkdir()
    cases.append(BadInput("empty_folder", empty, r"no (NIfTI|DICOM)"))
    cases.append(BadInput("missing", root / "missing.nii.gz", r"no such file"))
    return {c.name: c for c in cases}
