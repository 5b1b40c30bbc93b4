"""NIfTI files no one here wrote (nibabel's bundled test images) and hand-made header odd cases.

Each readable 3D file must land where nibabel puts it: SimpleITK's LPS physical point of a voxel must
equal nibabel's RAS affine applied to it with x and y negated. Other files must fail clearly.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from gliodeploy.errors import InputError
from gliodeploy.io import load_pet

DATA = Path(data_path)


def _assert_same_place(image: sitk.Image, affine_ras: np.ndarray, atol: float = 1e-3) -> None:
    size = np.array(image.GetSize())
    voxels = [(0, 0, 0), tuple(size - 1), tuple(size // 2), (size[0] - 1, 0, size[2] // 3)]
    for ijk in voxels:
        lps = np.array(image.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
        ras = affine_ras @ np.r_[np.asarray(ijk, float), 1.0]
        np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=atol, err_msg=f"voxel {ijk}")


@pytest.mark.parametrize(
    "name",
    ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii", "resampled_anat_moved.nii"],
)
def test_nibabel_images_keep_their_geometry(name: str) -> None:
    path = DATA / name
    pet = load_pet(path, assume_suv=True)
    reference = nib.load(path)
    _assert_same_place(pet.image, reference.affine)
    values = np.asarray(reference.dataobj, dtype=np.float32)
    # resampled_anat_moved.nii has NaN outside its field of view: ITK reads them as 0 (gliodeploy.io.nifti).
    np.testing.assert_allclose(pet.array_xyz, np.nan_to_num(values, nan=0.0), rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "message"), [("example4d.nii.gz", "2 frames"), ("functional.nii", "20 frames")]
)
def test_nibabel_4d_images_are_dynamic_pet_errors(name: str, message: str) -> None:
    with pytest.raises(InputError, match=f"4D dynamic PET \\({message}"):
        load_pet(DATA / name, assume_suv=True)


def test_nifti2_and_analyze_pairs_fail_clearly() -> None:
    with pytest.raises(InputError, match="NIfTI-2"):
        load_pet(DATA / "example_nifti2.nii.gz", assume_suv=True)
    with pytest.raises(InputError, match="unsupported file type"):
        load_pet(DATA / "nifti1.hdr", assume_suv=True)


def _volume() -> np.ndarray:
    return np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)


def _rotation_z(angle: float) -> np.ndarray:
    r = np.eye(4)
    r[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return r


def test_sform_wins_when_qform_and_sform_disagree(tmp_path: Path) -> None:
    """ITK alone would take the qform (8 mm away here); nibabel/FSL/SPM take the sform."""
    qform = np.diag([2.0, 2.0, 3.0, 1.0])
    qform[:3, 3] = [10, 20, 30]
    sform = _rotation_z(0.3) @ qform
    img = nib.Nifti1Image(_volume(), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    path = tmp_path / "both.nii.gz"
    nib.save(img, path)
    pet = load_pet(path, assume_suv=True)
    assert pet.metadata["geometry_source"] == "sform" and pet.metadata["qform_sform_shift_mm"] > 5
    _assert_same_place(pet.image, nib.load(path).affine)


def test_left_handed_qform_only(tmp_path: Path) -> None:
    affine = np.diag([2.0, -2.0, 3.0, 1.0])
    affine[:3, 3] = [-5, 60, -20]
    img = nib.Nifti1Image(_volume(), None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    path = tmp_path / "flip.nii"
    nib.save(img, path)
    pet = load_pet(path, assume_suv=True)
    assert pet.metadata["geometry_source"] == "qform"
    _assert_same_place(pet.image, nib.load(path).affine)


def test_sheared_or_missing_orientation_is_refused(tmp_path: Path) -> None:
    qform = np.diag([2.0, 2.0, 3.0, 1.0])
    sheared = qform.copy()
    sheared[0, 1] = 0.5
    img = nib.Nifti1Image(_volume(), None)
    img.set_qform(qform, code=1)
    img.set_sform(sheared, code=2)
    nib.save(img, tmp_path / "shear.nii")
    with pytest.raises(InputError, match="sform is sheared"):
        load_pet(tmp_path / "shear.nii", assume_suv=True)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "shear_only.nii")
    with pytest.raises(InputError, match="sheared or singular"):
        load_pet(tmp_path / "shear_only.nii", assume_suv=True)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "none.nii")
    with pytest.raises(InputError, match="no orientation"):
        load_pet(tmp_path / "none.nii", assume_suv=True)


def test_scl_slope_is_applied(tmp_path: Path) -> None:
    stored = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    img = nib.Nifti1Image(stored, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_slope_inter(2.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii")
    pet = load_pet(tmp_path / "scaled.nii", assume_suv=True)
    np.testing.assert_allclose(pet.array_xyz, stored * 2.5 - 3.0)
