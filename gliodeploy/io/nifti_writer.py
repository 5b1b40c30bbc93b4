"""Write a PET volume as NIfTI with its BIDS-PET JSON sidecar, both atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from gliodeploy.errors import InputError
from gliodeploy.io.bids import nifti_stem
from gliodeploy.utils.atomic import atomic_path, atomic_write


def write_pet_nifti(
    image: sitk.Image, path: str | os.PathLike[str], sidecar: dict[str, Any] | None = None
) -> Path:
    """Write ``image`` to ``path`` (``.nii`` or ``.nii.gz``) and ``sidecar`` to ``<stem>.json`` beside it.

    SimpleITK stores the geometry as both qform and sform (code 1, scanner space), which every reader
    agrees on. The sidecar is written first, so a NIfTI that exists always has its metadata. Returns
    the NIfTI path.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: a NIfTI file name must end in .nii or .nii.gz")
    if image.GetDimension() != 3:
        raise InputError(f"{path}: a static PET volume is 3D, got a {image.GetDimension()}D image")
    if sidecar is not None:
        try:
            text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: the sidecar cannot be written as JSON: {exc}") from exc
        atomic_write(path.with_name(f"{nifti_stem(path)}.json"), text + "\n")
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=path.name.lower().endswith(".gz"))
    return path
