"""NIfTI + BIDS-PET sidecar -> SUVbw, checked against SUV = C * W[g] / (D * 2^(-dt/T)) computed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy.errors import InputError, SuvError
from gliodeploy.io import (
    UNITS_SUV,
    UNITS_UNKNOWN,
    check_volume,
    compute_suv_factor,
    load_pet,
    write_pet_nifti,
)

F18 = 6586.2


def _activity(seed: int = 0, shape: tuple[int, int, int] = (7, 9, 11)) -> sitk.Image:
    """A small Bq/mL volume [z, y, x] with an oblique geometry."""
    values = np.random.default_rng(seed).uniform(1e3, 3e4, size=shape).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((2.0, 2.5, 3.0))
    image.SetOrigin((-40.0, 12.5, 7.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return image


def _expected_suv(bqml: np.ndarray, weight_kg: float, dose_bq: float, dt_s: float) -> np.ndarray:
    return bqml * weight_kg * 1000.0 / (dose_bq * 2.0 ** (-dt_s / F18))


def _sidecar(**overrides: object) -> dict:
    sidecar = {
        "Modality": "PT",
        "Manufacturer": "Siemens",
        "TracerName": "FDOPA",
        "TracerRadionuclide": "F18",
        "Units": "Bq/mL",
        "InjectedRadioactivity": 185.0,
        "InjectedRadioactivityUnits": "MBq",
        "TimeZero": "10:00:00",
        "InjectionStart": 0,
        "ScanStart": 1200,
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 1200,
    }
    sidecar.update(overrides)
    return {k: v for k, v in sidecar.items() if v is not None}


def _bids_dataset(root: Path, image: sitk.Image, sidecar: dict, weight: str = "70") -> Path:
    (root / "participants.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(
        f"participant_id\tage\tweight\nsub-02\t50\t90\nsub-01\t61\t{weight}\n"
    )
    return write_pet_nifti(image, root / "sub-01" / "pet" / "sub-01_pet.nii.gz", sidecar)


def test_sidecar_and_participants_give_suv(tmp_path: Path) -> None:
    image = _activity()
    path = _bids_dataset(tmp_path, image, _sidecar())
    assert (path.parent / "sub-01_pet.json").is_file()
    pet = load_pet(path)
    expected = _expected_suv(sitk.GetArrayFromImage(image), 70.0, 185e6, 1200.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), expected, rtol=1e-5)
    assert pet.units == UNITS_SUV and pet.subject == "01"
    assert pet.image.GetPixelID() == sitk.sitkFloat32
    assert pet.metadata["weight_source"] == str((tmp_path / "participants.tsv").resolve())
    assert pet.metadata["decay_time_s"] == 1200.0
    # geometry survives the write/read (SimpleITK writes qform = sform)
    assert np.allclose(pet.image.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(pet.image.GetDirection(), image.GetDirection(), atol=1e-6)
    assert np.allclose(pet.image.GetSpacing(), image.GetSpacing())


def test_explicit_weight_overrides_participants(tmp_path: Path) -> None:
    image = _activity()
    path = _bids_dataset(tmp_path, image, _sidecar())
    pet = load_pet(path, weight_kg=82.5)
    expected = _expected_suv(sitk.GetArrayFromImage(image), 82.5, 185e6, 1200.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), expected, rtol=1e-5)
    assert pet.metadata["weight_source"] == "argument"


def test_units_kbq_and_mci_match_bq_and_mbq(tmp_path: Path) -> None:
    image = _activity()
    reference = load_pet(_bids_dataset(tmp_path / "a", image, _sidecar()))
    kbq = sitk.Cast(image / 1000.0, sitk.sitkFloat32)
    in_kbq = load_pet(_bids_dataset(tmp_path / "b", kbq, _sidecar(Units="kBq/mL")))
    in_mci = load_pet(
        _bids_dataset(
            tmp_path / "c", image, _sidecar(InjectedRadioactivity=5.0, InjectedRadioactivityUnits="mCi")
        )
    )
    ref = sitk.GetArrayFromImage(reference.image)
    np.testing.assert_allclose(sitk.GetArrayFromImage(in_kbq.image), ref, rtol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(in_mci.image), ref, rtol=1e-6)  # 5 mCi = 185 MBq


def test_decay_corrected_to_injection_needs_no_decay(tmp_path: Path) -> None:
    image = _activity()
    path = _bids_dataset(tmp_path, image, _sidecar(InjectionStart=-300, ImageDecayCorrectionTime=-300))
    pet = load_pet(path)
    expected = _expected_suv(sitk.GetArrayFromImage(image), 70.0, 185e6, 0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), expected, rtol=1e-5)


def test_explicit_clock_time_combines_with_time_zero(tmp_path: Path) -> None:
    image = _activity()
    path = _bids_dataset(tmp_path, image, _sidecar(InjectionStart=None))
    pet = load_pet(path, injection_time="09:50:00")  # reference = 10:00:00 + 1200 s = 10:20:00
    assert pet.metadata["decay_time_s"] == 1800.0
    both = load_pet(path, injection_time="2024-03-01T23:50:00", scan_time="2024-03-02T00:20:00")
    assert both.metadata["decay_time_s"] == 1800.0


def test_session_weight_wins_over_participants(tmp_path: Path) -> None:
    image = _activity()
    (tmp_path / "participants.tsv").write_text("participant_id\tweight\nsub-01\t70\n")
    (tmp_path / "participants.json").write_text(json.dumps({"weight": {"Units": "kg"}}))
    subject_dir = tmp_path / "sub-01"
    path = write_pet_nifti(image, subject_dir / "ses-2" / "pet" / "sub-01_ses-2_pet.nii.gz", _sidecar())
    (subject_dir / "sub-01_sessions.tsv").write_text("session_id\tweight\nses-1\t70\nses-2\t64\n")
    pet = load_pet(path)
    assert pet.metadata["weight_kg"] == 64.0
    assert pet.metadata["weight_source"].endswith("sub-01_sessions.tsv")


def test_participants_tsv_argument_and_weight_units(tmp_path: Path) -> None:
    image = _activity()
    path = write_pet_nifti(image, tmp_path / "scans" / "sub-01_pet.nii", _sidecar())
    tsv = tmp_path / "meta" / "participants.tsv"
    tsv.parent.mkdir()
    tsv.write_text("participant_id\tweight\nsub-01\t154.32\n")
    (tsv.parent / "participants.json").write_text(json.dumps({"weight": {"Units": "lb"}}))
    pet = load_pet(path, participants_tsv=tsv)
    assert pet.metadata["weight_kg"] == pytest.approx(154.32 * 0.45359237)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"InjectedRadioactivity": None}, "InjectedRadioactivity"),
        ({"InjectedRadioactivityUnits": None}, "InjectedRadioactivityUnits"),
        ({"Units": None}, "Units"),
        ({"Units": "counts"}, "Units"),
        ({"ImageDecayCorrected": False}, "ImageDecayCorrected"),
        ({"ImageDecayCorrectionTime": None}, "ImageDecayCorrectionTime"),
        ({"TracerRadionuclide": None}, "TracerRadionuclide"),
        ({"InjectionStart": 1800}, "before the injection"),
    ],
)
def test_missing_or_wrong_sidecar_field_names_it(tmp_path: Path, overrides: dict, field: str) -> None:
    path = _bids_dataset(tmp_path, _activity(), _sidecar(**overrides))
    with pytest.raises(SuvError, match=field):
        load_pet(path)


def test_missing_weight_is_suv_error(tmp_path: Path) -> None:
    path = _bids_dataset(tmp_path, _activity(), _sidecar(), weight="n/a")
    with pytest.raises(SuvError, match="weight"):
        load_pet(path)
    with pytest.raises(SuvError, match="implausible"):
        load_pet(path, weight_kg=70000.0)  # grams given as kg
    no_sidecar = write_pet_nifti(_activity(), tmp_path / "plain.nii.gz")
    with pytest.raises(SuvError, match="Units is missing"):
        load_pet(no_sidecar, weight_kg=70)


def test_no_sidecar_with_explicit_values(tmp_path: Path) -> None:
    image = _activity()
    path = write_pet_nifti(image, tmp_path / "plain.nii.gz")
    pet = load_pet(
        path,
        image_units="Bq/mL",
        weight_kg=70,
        injected_dose_bq=185e6,
        injection_time="2024-01-01T10:00:00",
        scan_time="2024-01-01T10:30:00",
        half_life_s=F18,
    )
    expected = _expected_suv(sitk.GetArrayFromImage(image), 70.0, 185e6, 1800.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), expected, rtol=1e-5)


def test_assume_suv_passes_values_through(tmp_path: Path) -> None:
    image = _activity()
    path = write_pet_nifti(image, tmp_path / "suv.nii.gz")
    pet = load_pet(path, assume_suv=True, subject="P7")
    assert pet.units == UNITS_UNKNOWN and pet.subject == "P7"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pet.image), sitk.GetArrayFromImage(image))
    assert pet.array_xyz.shape == image.GetSize()


def test_compute_suv_factor_formula() -> None:
    factor = compute_suv_factor(weight_kg=70, injected_dose_bq=200e6, decay_time_s=F18, half_life_s=F18)
    assert factor == pytest.approx(70000 / 100e6)  # one half-life: half the dose is left
    with pytest.raises(SuvError, match="weight"):
        compute_suv_factor(weight_kg=0, injected_dose_bq=200e6, decay_time_s=0, half_life_s=F18)


def _write(tmp_path: Path, values: np.ndarray, spacing: tuple = (2.0, 2.0, 2.0)) -> Path:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing[: image.GetDimension()])
    path = tmp_path / "x.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    ("values", "spacing", "message"),
    [
        (np.ones((3, 6, 7, 8), np.float32), (2.0, 2.0, 2.0, 1.0), "4D dynamic PET \\(3 frames"),
        (np.ones((6, 7), np.float32), (2.0, 2.0), "3D volume"),
        (np.full((4, 5, 6), 3.0, np.float32), (2.0, 2.0, 2.0), "constant"),
        (np.arange(120, dtype=np.float32).reshape(4, 5, 6), (2.0, 50.0, 2.0), "spacing"),
    ],
)
def test_unusable_volumes_raise_input_error(
    tmp_path: Path, values: np.ndarray, spacing: tuple, message: str
) -> None:
    if values.ndim == 4:
        image = sitk.JoinSeries([sitk.GetImageFromArray(np.random.rand(6, 7, 8).astype(np.float32))] * 3)
        path = tmp_path / "dyn.nii.gz"
        sitk.WriteImage(image, str(path))
    else:
        path = _write(tmp_path, values, spacing)
    with pytest.raises(InputError, match=message):
        load_pet(path, assume_suv=True)


def test_missing_path_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_pet(tmp_path / "nope.nii.gz")
    hdr = tmp_path / "scan.hdr"
    hdr.write_bytes(b"\0" * 348)
    with pytest.raises(InputError, match="unsupported file type"):
        load_pet(hdr)


def test_check_volume_rejects_nan_and_itk_zeroes_nifti_nan(tmp_path: Path) -> None:
    values = np.ones((4, 6, 6), np.float32)
    values[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="1 of 144 voxels are NaN"):
        check_volume(sitk.GetImageFromArray(values), tmp_path / "mem")
    # ITK's NIfTI reader turns NaN into 0 before we see it (documented in gliodeploy.io.nifti).
    values[0, 0, 0] = 2.0
    pet = load_pet(_write(tmp_path, values), assume_suv=True)
    assert sitk.GetArrayFromImage(pet.image)[1, 2, 3] == 0.0
