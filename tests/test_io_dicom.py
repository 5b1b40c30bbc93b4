"""DICOM PET series -> SUVbw with the QIBA vendor-neutral rules, on series written with pydicom here."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from gliodeploy.errors import InputError, SuvError
from gliodeploy.io import UNITS_SUV, load_pet, write_pet_dicom_series

F18 = 6586.2
INJECTION = datetime(2024, 3, 1, 10, 0, 0)
SERIES = datetime(2024, 3, 1, 10, 25, 30)


def _activity(seed: int = 0) -> sitk.Image:
    """Bq/mL volume [z=6, y=9, x=8] with an oblique, anisotropic geometry; slice maxima differ widely."""
    values = np.random.default_rng(seed).uniform(500.0, 2e4, size=(6, 9, 8))
    values *= np.array([1.0, 3.0, 0.2, 7.0, 1.5, 0.05])[:, None, None]
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.5, 3.27))
    image.SetOrigin((-120.0, -95.5, 40.25))
    c, s = np.cos(0.25), np.sin(0.25)  # rotation about x (a tilted gantry)
    image.SetDirection((1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c))
    return image


def _suv(bqml: np.ndarray, weight_kg: float, dose_bq: float, dt_s: float) -> np.ndarray:
    return bqml * weight_kg * 1000.0 / (dose_bq * 2.0 ** (-dt_s / F18))


def _write(folder: Path, image: sitk.Image | None = None, **kw: object) -> Path:
    args: dict = {
        "weight_kg": 72.0,
        "injected_dose_bq": 180e6,
        "injection_datetime": INJECTION,
        "series_datetime": SERIES,
        "uid_seed": str(folder.name),
    }
    args.update(kw)
    return write_pet_dicom_series(image if image is not None else _activity(), folder, **args)


def _values(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(np.float64)


def _close(actual: sitk.Image, expected: np.ndarray) -> None:
    """int16 with a per-slice slope keeps ~1/32767 of each slice's maximum."""
    tolerance = np.abs(expected).max(axis=(1, 2), keepdims=True) / 32767.0
    assert np.all(np.abs(_values(actual) - expected) <= tolerance + 1e-6 * np.abs(expected))


def test_bqml_suv_and_geometry_round_trip(tmp_path: Path) -> None:
    image = _activity()
    folder = _write(tmp_path / "bqml", image)
    pet = load_pet(folder)
    _close(pet.image, _suv(_values(image), 72.0, 180e6, 1530.0))
    assert pet.units == UNITS_SUV and pet.subject == "ANON"
    assert pet.metadata["decay_time_s"] == 1530.0
    assert pet.metadata["scan_time_source"] == "SeriesDate/SeriesTime"
    assert pet.metadata["weight_source"] == "PatientWeight (0010,1030)"
    np.testing.assert_allclose(pet.image.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(pet.image.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(pet.image.GetDirection(), image.GetDirection(), atol=1e-6)
    # a single file of the series reads the whole series
    one_file = load_pet(sorted(folder.glob("*.dcm"))[3])
    np.testing.assert_array_equal(_values(one_file.image), _values(pet.image))


def test_explicit_arguments_override_tags(tmp_path: Path) -> None:
    image = _activity()
    folder = _write(tmp_path / "ovr", image)
    pet = load_pet(
        folder,
        weight_kg=60.0,
        injected_dose_bq=200e6,
        injection_time="2024-03-01T09:50:00",
        scan_time="2024-03-01T10:20:00",
    )
    _close(pet.image, _suv(_values(image), 60.0, 200e6, 1800.0))


def test_per_slice_rescale_slopes_including_an_integer_first_slice(tmp_path: Path) -> None:
    image = _activity()
    folder = _write(tmp_path / "slopes", image)
    files = sorted(folder.glob("*.dcm"))
    slopes = [float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope) for f in files]
    assert max(slopes) / min(slopes) > 100  # really different slopes
    # Slope 1 on the first slice makes SimpleITK pick int16 for the whole series unless forced to float.
    first = pydicom.dcmread(files[0])
    truth = first.pixel_array.astype(np.float64) * float(first.RescaleSlope)
    first.PixelData = np.clip(np.rint(truth), -32768, 32767).astype("<i2").tobytes()
    first.RescaleSlope = "1"
    first.save_as(files[0])
    expected = _values(image)
    expected[0] = np.rint(truth)
    pet = load_pet(folder)
    _close(pet.image, _suv(expected, 72.0, 180e6, 1530.0))


def test_post_processed_series_uses_acquisition_time(tmp_path: Path) -> None:
    image = _activity()
    acquired = datetime(2024, 3, 1, 10, 20, 0)
    folder = _write(
        tmp_path / "post", image, acquisition_datetime=acquired, series_datetime=datetime(2024, 3, 1, 14)
    )
    pet = load_pet(folder)
    assert pet.metadata["decay_time_s"] == 1200.0
    assert "AcquisitionDate" in pet.metadata["scan_time_source"]
    _close(pet.image, _suv(_values(image), 72.0, 180e6, 1200.0))


def test_midnight_crossing_with_clock_only_injection_time(tmp_path: Path) -> None:
    image = _activity()
    folder = _write(
        tmp_path / "midnight",
        image,
        injection_datetime=datetime(2024, 3, 1, 23, 50),
        series_datetime=datetime(2024, 3, 2, 0, 20),
        write_start_datetime=False,
    )
    assert (
        "RadiopharmaceuticalStartDateTime"
        not in pydicom.dcmread(next(folder.glob("*.dcm")))["RadiopharmaceuticalInformationSequence"][0]
    )
    pet = load_pet(folder)
    assert pet.metadata["injection_time_source"].startswith("RadiopharmaceuticalStartTime (0018,1072)")
    assert pet.metadata["decay_time_s"] == 1800.0
    _close(pet.image, _suv(_values(image), 72.0, 180e6, 1800.0))


def test_philips_cnts_suv_scale_factor_7053_1000(tmp_path: Path) -> None:
    image = _activity()
    scale = 0.37  # Bq/mL per count
    # A private SUV factor deliberately unlike the formula's, to prove the reader takes it as is.
    private_suv_factor = 1.234e-3
    folder = _write(
        tmp_path / "cnts1000",
        image,
        units="CNTS",
        manufacturer="Philips",
        philips_activity_scale=scale,
        philips_suv_factor=private_suv_factor,
    )
    pet = load_pet(folder)
    assert pet.metadata["suv_source"] == "(7053,1000)"
    _close(pet.image, _values(image) / scale * private_suv_factor)


def test_philips_cnts_activity_scale_7053_1009(tmp_path: Path) -> None:
    image = _activity()
    folder = _write(
        tmp_path / "cnts1009", image, units="CNTS", manufacturer="Philips", philips_activity_scale=0.37
    )
    pet = load_pet(folder)
    assert pet.metadata["suv_source"] == "(7053,1009) x formula"
    _close(pet.image, _suv(_values(image), 72.0, 180e6, 1530.0))


def test_gml_is_already_suv(tmp_path: Path) -> None:
    suv = sitk.Cast(_activity() / 5000.0, sitk.sitkFloat32)
    folder = _write(tmp_path / "gml", suv, units="GML", weight_kg=None, injected_dose_bq=None)
    pet = load_pet(folder)
    assert pet.units == UNITS_SUV and pet.metadata["suv_factor"] == 1.0
    _close(pet.image, _values(suv))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"weight_kg": None}, r"PatientWeight \(0010,1030\) is missing in .*--weight"),
        ({"weight_kg": 0.0}, r"PatientWeight \(0010,1030\) is zero"),
        ({"injected_dose_bq": None}, r"RadionuclideTotalDose \(0018,1074\) is missing"),
        ({"corrected_image": ("ATTN", "SCAT")}, "lacks DECY"),
        ({"decay_correction": "ADMIN"}, "DecayCorrection"),
        ({"units": "PROPCNTS"}, "Units"),
        ({"units": "CNTS", "philips_activity_scale": 1.0, "philips_suv_factor": None}, None),
    ],
)
def test_missing_suv_tags_raise_suv_error(tmp_path: Path, kw: dict, message: str | None) -> None:
    if kw.get("units") == "PROPCNTS":
        folder = _write(tmp_path / "s")
        for f in folder.glob("*.dcm"):
            ds = pydicom.dcmread(f)
            ds.Units = "PROPCNTS"
            ds.save_as(f)
    elif message is None:  # CNTS whose private scale factors were stripped (anonymiser)
        folder = _write(tmp_path / "s", **kw)
        for f in folder.glob("*.dcm"):
            ds = pydicom.dcmread(f)
            ds.remove_private_tags()
            ds.save_as(f)
        message = r"7053,1000.*7053,1009"
    else:
        folder = _write(tmp_path / "s", **kw)
    with pytest.raises(SuvError, match=message):
        load_pet(folder)
    assert load_pet(folder, assume_suv=True).units == "unknown"


def test_ct_modality_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ct", modality="CT")
    with pytest.raises(InputError, match="modality CT, not PET"):
        load_pet(folder, assume_suv=True)


def test_several_series_in_a_folder(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", series_number=1)
    b = _write(tmp_path / "b", _activity(seed=1), series_number=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder, tag in ((a, "a"), (b, "b")):
        for f in folder.glob("*.dcm"):
            shutil.copy(f, mixed / f"{tag}_{f.name}")
    uid_a = str(pydicom.dcmread(next(a.glob("*.dcm"))).SeriesInstanceUID)
    uid_b = str(pydicom.dcmread(next(b.glob("*.dcm"))).SeriesInstanceUID)
    with pytest.raises(InputError, match="2 DICOM series") as excinfo:
        load_pet(mixed)
    assert uid_a in str(excinfo.value) and uid_b in str(excinfo.value)
    picked = load_pet(mixed, series_uid=uid_b)
    np.testing.assert_array_equal(_values(picked.image), _values(load_pet(b).image))
    by_file = load_pet(next(mixed.glob("a_*.dcm")))
    assert by_file.metadata["series_uid"] == uid_a


def test_dynamic_and_incomplete_series_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "dyn")
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.NumberOfTimeSlices = 4
        ds.save_as(f)
    with pytest.raises(InputError, match=r"4D dynamic PET \(4 frames\)"):
        load_pet(folder)
    gap = _write(tmp_path / "gap")
    sorted(gap.glob("*.dcm"))[3].unlink()
    with pytest.raises(InputError, match="incomplete series: 5 of 6"):
        load_pet(gap)
    with pytest.raises(InputError, match="no DICOM image series"):
        load_pet(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_writer_refuses_existing_folder_and_cnts_without_scale(tmp_path: Path) -> None:
    folder = _write(tmp_path / "x")
    with pytest.raises(InputError, match="already exists"):
        _write(folder)
    with pytest.raises(InputError, match="philips_activity_scale"):
        _write(tmp_path / "y", units="CNTS")


def test_left_handed_volume_keeps_its_physical_placement(tmp_path: Path) -> None:
    """DICOM slices are ordered along the row x column normal, so a left-handed grid comes back re-indexed."""
    image = _activity()
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    pet = load_pet(_write(tmp_path / "lh", image), assume_suv=True)
    assert pet.image.GetDirection()[8] == pytest.approx(1.0)
    size = image.GetSize()
    for ijk in [(0, 0, 0), (size[0] - 1, size[1] - 1, size[2] - 1), (3, 2, 1)]:
        index = pet.image.TransformPhysicalPointToIndex(image.TransformIndexToPhysicalPoint(ijk))
        assert pet.image[index] == pytest.approx(image[ijk], rel=1e-4)


def test_io_stays_on_the_light_side() -> None:
    """Reading PET must not pull torch, scipy, scikit-learn, nilearn or nibabel (client installs)."""
    import subprocess
    import sys

    code = (
        "import sys, gliodeploy.io, gliodeploy.io.loader, gliodeploy.io.dicom, gliodeploy.io.nifti\n"
        "heavy = {'torch', 'scipy', 'sklearn', 'nilearn', 'nibabel'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
