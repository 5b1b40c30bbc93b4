"""Input hardening: what hospitals send is accepted, what is unsafe is refused, through the real readers/CLIs.

DICOM series whose slices disagree (geometry or SUV inputs), study folders holding several series
(PET + CT, AC + NAC PET), BIDS ``Units`` spellings, NIfTI headers announcing huge volumes and gzip
bombs, and manifest subjects that are not safe file names.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from badinputs import head_phantom

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app
from gliodeploy.errors import InputError, SuvError
from gliodeploy.io import load_pet, write_pet_dicom_series, write_pet_nifti

INJECTION = datetime(2024, 3, 1, 10, 0, 0)
SERIES = datetime(2024, 3, 1, 10, 20, 0)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real ``gliodeploy`` entry point; return (exit code, stderr)."""
    code = 0
    try:
        run_app(app, argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _volume(seed: int = 0, n: int = 8) -> sitk.Image:
    values = np.random.default_rng(seed).uniform(1e3, 2e4, size=(n, 9, 7)).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((2.0, 2.5, 3.0))
    image.SetOrigin((-10.0, 5.0, 20.0))
    return image


def _series(folder: Path, image: sitk.Image | None = None, **kw: object) -> Path:
    args: dict = {
        "weight_kg": 72.0,
        "injected_dose_bq": 180e6,
        "injection_datetime": INJECTION,
        "series_datetime": SERIES,
        "uid_seed": folder.name,
    }
    args.update(kw)
    return write_pet_dicom_series(image if image is not None else _volume(), folder, **args)


def _edit_slice(folder: Path, index: int, edit) -> Path:  # noqa: ANN001
    """Apply ``edit(dataset)`` to the ``index``-th file of a series; returns that file."""
    path = sorted(folder.glob("*.dcm"))[index]
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path


def _study(folder: Path, *series: Path) -> Path:
    """Copy several series into one folder, as a PACS study export does."""
    folder.mkdir()
    for s in series:
        for f in s.glob("*.dcm"):
            shutil.copy(f, folder / f"{s.name}_{f.name}")
    return folder


def _uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)


# ---- 1. one series, one set of geometry and SUV inputs ---------------------------------------------


def _drug(ds: pydicom.Dataset) -> pydicom.Dataset:
    return ds.RadiopharmaceuticalInformationSequence[0]


SLICE_EDITS = {
    "PatientWeight (0010,1030)": (lambda ds: setattr(ds, "PatientWeight", "720"), SuvError),
    "RadionuclideTotalDose (0018,1074)": (
        lambda ds: setattr(_drug(ds), "RadionuclideTotalDose", "18000000"),
        SuvError,
    ),
    "RadionuclideHalfLife (0018,1075)": (
        lambda ds: setattr(_drug(ds), "RadionuclideHalfLife", "1223.4"),
        SuvError,
    ),
    "RadiopharmaceuticalStartDateTime (0018,1078)": (
        lambda ds: setattr(_drug(ds), "RadiopharmaceuticalStartDateTime", "20240301093000"),
        SuvError,
    ),
    "SeriesTime (0008,0031)": (lambda ds: setattr(ds, "SeriesTime", "110000"), SuvError),
    "DecayCorrection (0054,1102)": (lambda ds: setattr(ds, "DecayCorrection", "ADMIN"), SuvError),
    "CorrectedImage (0028,0051)": (lambda ds: setattr(ds, "CorrectedImage", ["DECY", "ATTN"]), SuvError),
    "Units (0054,1001)": (lambda ds: setattr(ds, "Units", "GML"), InputError),
    "ImageOrientationPatient (0020,0037)": (
        lambda ds: setattr(ds, "ImageOrientationPatient", ["1", "0", "0", "0", "0.98", "0.2"]),
        InputError,
    ),
    "PixelSpacing (0028,0030)": (lambda ds: setattr(ds, "PixelSpacing", ["2.5", "2.2"]), InputError),
    "Rows (0028,0010)": (lambda ds: setattr(ds, "Rows", 10), InputError),
}


@pytest.mark.parametrize("field", sorted(SLICE_EDITS))
def test_a_slice_that_differs_from_its_series_is_refused(tmp_path: Path, field: str) -> None:
    edit, error = SLICE_EDITS[field]
    folder = _series(tmp_path / "s")
    odd = _edit_slice(folder, 3, edit)
    with pytest.raises(error, match=r"differs between the slices") as excinfo:
        load_pet(folder)
    message = str(excinfo.value)
    assert field in message and odd.name in message and "InstanceNumber 4" in message
    assert "the other 7 slice(s)" in message


def test_a_missing_weight_on_one_slice_is_refused_and_an_explicit_weight_replaces_the_tags(
    tmp_path: Path,
) -> None:
    folder = _series(tmp_path / "w")
    odd = _edit_slice(folder, 0, lambda ds: delattr(ds, "PatientWeight"))
    with pytest.raises(SuvError, match=rf"PatientWeight .*{odd.name} \(InstanceNumber 1\) has missing"):
        load_pet(folder)
    pet = load_pet(folder, weight_kg=72.0)  # the tags are not used, so their disagreement does not matter
    reference = load_pet(_series(tmp_path / "ref"))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(pet.image), sitk.GetArrayFromImage(reference.image), rtol=1e-6
    )


def test_per_slice_rescale_slopes_and_acquisition_times_stay_supported(tmp_path: Path) -> None:
    folder = _series(tmp_path / "ok")
    slopes = {pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope for f in folder.glob("*.dcm")}
    assert len(slopes) > 1
    _edit_slice(folder, 5, lambda ds: setattr(ds, "AcquisitionTime", "102500"))  # a later bed position
    _edit_slice(folder, 2, lambda ds: setattr(ds, "PixelSpacing", ["2.5000001", "2.0"]))  # rounding only
    assert load_pet(folder).units == "SUVbw"


def test_preprocess_cli_refuses_a_wrong_weight_on_one_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _series(tmp_path / "scan")
    odd = _edit_slice(folder, 6, lambda ds: setattr(ds, "PatientWeight", "7.2"))
    out = tmp_path / "grid.nii.gz"
    code, err = run_cli(["preprocess", str(folder), "--preset", "tiny", "--out", str(out)], capsys)
    assert code == 3, err
    assert err.startswith("error: ") and "PatientWeight" in err and odd.name in err
    assert "Traceback" not in err and not out.exists()


# ---- 2. several series in one study folder -----------------------------------------------------------


def _head_bqml() -> sitk.Image:
    """A head phantom in Bq/mL that preprocesses on the tiny grid (40^3 at 5 mm)."""
    values = head_phantom() * np.float32(185e6 / 70_000.0 * 2.0 ** (-1200 / 6586.2))
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((5.0, 5.0, 5.0))
    image.SetOrigin((-100.0, -100.0, -100.0))
    return image


@pytest.fixture(scope="module")
def pet_ct_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PET/CT study folder and an AC + NAC PET study folder (plus the PET series on its own)."""
    root = tmp_path_factory.mktemp("studies")
    image = _head_bqml()
    pet = _series(root / "pet", image, weight_kg=70.0, injected_dose_bq=185e6, series_description="PET AC")
    ct = _series(
        root / "ct", _volume(3), modality="CT", series_number=2, series_description="CT head", weight_kg=None
    )
    nac = _series(
        root / "nac",
        image,
        weight_kg=70.0,
        injected_dose_bq=185e6,
        series_number=3,
        series_description="PET NAC",
        corrected_image=("NORM", "DTIM", "DECY", "RAN"),
    )
    return {
        "pet": pet,
        "nac": nac,
        "pet_ct": _study(root / "pet_ct", pet, ct),
        "ac_nac": _study(root / "ac_nac", pet, nac),
    }


def test_pet_is_chosen_over_its_ct_and_ac_over_nac(pet_ct_study: dict[str, Path]) -> None:
    alone = sitk.GetArrayFromImage(load_pet(pet_ct_study["pet"]).image)
    for study, reason in (("pet_ct", "PET (Modality PT)"), ("ac_nac", "attenuation-corrected")):
        pet = load_pet(pet_ct_study[study])
        assert pet.metadata["series_uid"] == _uid(pet_ct_study["pet"])
        assert reason in pet.metadata["series_choice"] and "PET AC" in pet.metadata["series_choice"]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(pet.image), alone)
    nac = load_pet(pet_ct_study["ac_nac"], series_uid=_uid(pet_ct_study["nac"]), assume_suv=True)
    assert nac.metadata["series_uid"] == _uid(pet_ct_study["nac"]) and nac.metadata["series_choice"] is None


def test_ambiguous_or_pet_less_studies_list_their_candidates(tmp_path: Path) -> None:
    a = _series(tmp_path / "a", series_description="FDOPA 10-30 min")
    b = _series(tmp_path / "b", _volume(1), series_number=2, series_description="FDOPA 20-40 min")
    with pytest.raises(InputError, match=r"2 PET series cannot be told apart.*--series-uid") as excinfo:
        load_pet(_study(tmp_path / "two_pet", a, b))
    for uid, description in ((_uid(a), "FDOPA 10-30 min"), (_uid(b), "FDOPA 20-40 min")):
        assert f"{uid} ({description}, PT, AC)" in str(excinfo.value)
    ct = _series(tmp_path / "ct", modality="CT", series_description="CT")
    mr = _series(tmp_path / "mr", _volume(2), modality="MR", series_number=2, series_description="T1")
    with pytest.raises(InputError, match=r"holds 2 DICOM series and none is PET \(PT\)"):
        load_pet(_study(tmp_path / "no_pet", ct, mr))
    with pytest.raises(InputError, match="no series 1.2.3"):
        load_pet(tmp_path / "two_pet", series_uid="1.2.3")


def test_preprocess_cli_prints_the_chosen_series_and_takes_series_uid(
    pet_ct_study: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.nii.gz"
    argv = ["preprocess", str(pet_ct_study["pet_ct"]), "--preset", "tiny", "--out", str(out)]
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"chose series {_uid(pet_ct_study['pet'])} (PET AC, PT, AC)" in " ".join(err.split())
    nac_out = tmp_path / "nac.nii.gz"
    argv = ["preprocess", str(pet_ct_study["ac_nac"]), "--assume-suv", "--preset", "tiny", "-o", str(nac_out)]
    code, err = run_cli([*argv, "--series-uid", _uid(pet_ct_study["nac"])], capsys)
    assert code == 0, err
    assert nac_out.is_file()
    assert _uid(pet_ct_study["nac"]) in " ".join(err.split())
    code, err = run_cli([*argv[:-1], str(tmp_path / "x.nii.gz"), "--series-uid", "9.9"], capsys)
    assert code == 2 and err.startswith("error: ") and "no series 9.9" in err
    assert not (tmp_path / "x.nii.gz").exists()


def _client_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gliodeploy.client.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_client_series_uid_needs_exactly_one_scan(pet_ct_study: dict[str, Path]) -> None:
    scans = (str(pet_ct_study["pet"]), str(pet_ct_study["nac"]))
    proc = _client_cli("predict", *scans, "--series-uid", "1.2.3", "--url", "localhost:9")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --series-uid names one series: give one scan, not 2")


@pytest.mark.server
def test_client_predict_reads_the_pet_of_a_study_and_records_the_choice(
    request: pytest.FixtureRequest, pet_ct_study: dict[str, Path]
) -> None:
    server = request.getfixturevalue("triton_server")
    proc = _client_cli("predict", str(pet_ct_study["pet_ct"]), "--url", server.http_url, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    pet_uid = _uid(pet_ct_study["pet"])
    assert result["scan"]["series_uid"] == pet_uid and result["scan"]["format"] == "dicom"
    assert "PET (Modality PT)" in result["scan"]["series_choice"]
    assert f"chose series {pet_uid} (PET AC, PT, AC)" in proc.stderr
    alone = json.loads(
        _client_cli("predict", str(pet_ct_study["pet"]), "--url", server.http_url, "--json").stdout
    )
    assert result["probability"] == pytest.approx(alone["results"][0]["probability"], abs=1e-6)
    assert "series_choice" not in alone["results"][0]["scan"]  # a folder with one series needs no choice
    nac_uid = _uid(pet_ct_study["nac"])
    args = ("predict", str(pet_ct_study["ac_nac"]), "--url", server.http_url, "--json", "--assume-suv")
    proc = _client_cli(*args, "--series-uid", nac_uid)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["scan"]["series_uid"] == nac_uid


def test_explain_cli_reads_the_pet_of_a_study_and_takes_series_uid(
    tiny_run: Path, pet_ct_study: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "explained"
    code, err = run_cli(["explain", str(tiny_run), str(pet_ct_study["pet_ct"]), "--out", str(out)], capsys)
    assert code == 0, err
    pet_uid = _uid(pet_ct_study["pet"])
    assert f"chose series {pet_uid} (PET AC, PT, AC)" in err
    summary = json.loads(next(out.glob("*_explanation.json")).read_text())
    assert (
        summary["series"]["series_uid"] == pet_uid
        and "PET (Modality PT)" in summary["series"]["series_choice"]
    )
    argv = ["explain", str(tiny_run), str(pet_ct_study["pet_ct"]), "--out", str(tmp_path / "ct")]
    code, err = run_cli([*argv, "--series-uid", "1.2.3"], capsys)
    assert code == 2 and err.startswith("error: ") and "no series 1.2.3" in err
    assert not (tmp_path / "ct").exists()


# ---- 3. BIDS-PET Units as dcm2niix and people write them ----------------------------------------------


def _bids_sidecar(units: str) -> dict:
    return {
        "Modality": "PT",
        "TracerRadionuclide": "F18",
        "Units": units,
        "InjectedRadioactivity": 185.0,
        "InjectedRadioactivityUnits": "MBq",
        "PatientWeight": 70.0,
        "TimeZero": "10:00:00",
        "InjectionStart": 0,
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 1200,
    }


@pytest.mark.parametrize("units", ["BQML", "Bq/ml", "Bq/mL", "bq/cc", "Bq.mL-1", "Bq mL^-1"])
def test_bids_units_spellings_of_bq_per_ml_are_accepted(tmp_path: Path, units: str) -> None:
    image = _volume()
    reference = load_pet(write_pet_nifti(image, tmp_path / "ref" / "pet.nii.gz", _bids_sidecar("Bq/mL")))
    pet = load_pet(write_pet_nifti(image, tmp_path / "x" / "pet.nii.gz", _bids_sidecar(units)))
    assert pet.metadata["units_original"] == units and pet.metadata["to_bqml"] == 1.0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pet.image), sitk.GetArrayFromImage(reference.image))
    kbq = load_pet(write_pet_nifti(image / 1000.0, tmp_path / "k" / "pet.nii.gz", _bids_sidecar("KBQML")))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(kbq.image), sitk.GetArrayFromImage(reference.image), rtol=1e-5
    )


def test_unknown_bids_units_are_refused_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = write_pet_nifti(_volume(), tmp_path / "pet.nii.gz", _bids_sidecar("CNTS"))
    out = tmp_path / "grid.nii.gz"
    code, err = run_cli(["preprocess", str(scan), "--preset", "tiny", "--out", str(out)], capsys)
    assert code == 3 and err.startswith("error: Units in ") and "pet.json" in err
    assert "'CNTS' are not an activity concentration" in err and not out.exists()


# ---- 4. NIfTI size guard and gzip bombs, before any voxel is allocated ----------------------------------


def _nifti_bytes(tmp_path: Path, shape_zyx: tuple[int, int, int] = (16, 16, 16)) -> bytes:
    """A real NIfTI-1 file (int16, qform and sform set) written by SimpleITK, as bytes."""
    path = tmp_path / "template.nii"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.arange(np.prod(shape_zyx), dtype=np.int16).reshape(shape_zyx)), str(path)
    )
    data = path.read_bytes()
    path.unlink()
    return data


def _with_dims(data: bytes, dims: tuple[int, int, int], datatype: int = 16, bitpix: int = 32) -> bytes:
    header = bytearray(data[:352])  # header + the 4-byte extension flag; the voxels are never written
    header[40:56] = struct.pack("<8h", 3, *dims, 1, 1, 1, 1)
    header[70:74] = struct.pack("<hh", datatype, bitpix)
    return bytes(header)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_announcing_a_huge_volume_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    huge = _with_dims(_nifti_bytes(tmp_path), (2000, 2000, 2000))
    scan = tmp_path / f"huge{suffix}"
    scan.write_bytes(gzip.compress(huge) if suffix == ".nii.gz" else huge)
    assert scan.stat().st_size < 1000
    with pytest.raises(InputError, match=r"announces 29\.8 GiB of voxels \(2000x2000x2000 float32 voxels"):
        load_pet(scan, assume_suv=True)
    out = tmp_path / "grid.nii.gz"
    code, err = run_cli(
        ["preprocess", str(scan), "--assume-suv", "--preset", "tiny", "--out", str(out)], capsys
    )
    assert code == 2 and err.startswith(f"error: huge{suffix} announces 29.8 GiB")
    assert "more than the 1.0 GiB limit" in err and "GLIODEPLOY_MAX_VOLUME_BYTES" in err
    assert "Traceback" not in err and not out.exists()


def test_a_gzip_bomb_is_refused_after_a_bounded_decompression(tmp_path: Path) -> None:
    data = _nifti_bytes(tmp_path)  # 16^3 int16: 8 KiB of voxels announced
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        fh.write(data)
        zeros = bytes(1 << 20)
        for _ in range(64):  # 64 MiB more than the header announces
            fh.write(zeros)
    assert bomb.stat().st_size < 200_000  # a small file...
    with pytest.raises(
        InputError, match=r"decompresses to more than the 8544 bytes its header announces"
    ) as exc:
        load_pet(bomb, assume_suv=True)
    stopped = int(str(exc.value).split("stopped after ")[1].split(")")[0])
    assert stopped <= 8544 + 2 * (1 << 20)  # ...of which at most ~2 MiB were inflated
    ok = tmp_path / "ok.nii.gz"
    ok.write_bytes(gzip.compress(data))
    assert load_pet(ok, assume_suv=True).image.GetSize() == (16, 16, 16)


def test_the_volume_limit_is_configurable_and_guards_dicom_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = tmp_path / "ok.nii"
    scan.write_bytes(_nifti_bytes(tmp_path))
    series = _series(tmp_path / "dicom")  # 8 slices of 9x7
    monkeypatch.setenv("GLIODEPLOY_MAX_VOLUME_BYTES", "4000")
    with pytest.raises(
        InputError, match=r"ok.nii announces 8.0 KiB of voxels .* more than the 3.9 KiB limit"
    ):
        load_pet(scan, assume_suv=True)
    monkeypatch.setenv("GLIODEPLOY_MAX_VOLUME_BYTES", "1000")
    with pytest.raises(InputError, match=r"the series announces 2.0 KiB .*float32.*1000 bytes limit"):
        load_pet(series)
    monkeypatch.setenv("GLIODEPLOY_MAX_VOLUME_BYTES", "lots")
    with pytest.raises(InputError, match="GLIODEPLOY_MAX_VOLUME_BYTES='lots' is not a positive number"):
        load_pet(scan, assume_suv=True)
    monkeypatch.setenv("GLIODEPLOY_MAX_VOLUME_BYTES", "1e4")
    assert load_pet(scan, assume_suv=True).image.GetSize() == (16, 16, 16)


# ---- 5. manifest subjects are safe file names; the cache never writes outside its root ----------------

MANIFEST_HEADER = "subject,image,label,scanner,site,split\n"


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("../x", "is not a safe file name"),
        ("a/b", "is not a safe file name"),
        ("/etc/passwd", "is not a safe file name"),
        ("", "empty subject"),
        ("P 001", "is not a safe file name"),
        ("..", "is not a safe file name"),
        (".hidden", "is not a safe file name"),
        ("a\\\\b", "is not a safe file name"),
        ("x;rm", "is not a safe file name"),
    ],
)
def test_unsafe_manifest_subjects_are_refused_naming_the_row(
    tmp_path: Path, subject: str, problem: str
) -> None:
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.errors import ConfigError

    (tmp_path / "a.nii.gz").write_bytes(b"")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        MANIFEST_HEADER + "P001,a.nii.gz,1,S,X,train\n" + f'"{subject}",a.nii.gz,0,S,X,train\n'
    )
    with pytest.raises(ConfigError, match=rf"line 3: .*{problem}"):
        read_manifest(manifest)


def test_safe_subjects_and_the_series_uid_column_are_read(tmp_path: Path) -> None:
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.errors import ConfigError

    (tmp_path / "a.nii.gz").write_bytes(b"")
    manifest = tmp_path / "m.csv"
    rows = "sub-001,a.nii.gz,1,S,X,train,\nP_002.v2,a.nii.gz,0,S,X,train,1.2.840.10008.99\n"
    manifest.write_text(MANIFEST_HEADER.replace("split", "split,series_uid") + rows)
    read = read_manifest(manifest)
    assert [(r.subject, r.series_uid) for r in read.rows] == [
        ("sub-001", None),
        ("P_002.v2", "1.2.840.10008.99"),
    ]
    manifest.write_text(
        MANIFEST_HEADER.replace("split", "split,series_uid") + "P1,a.nii.gz,1,S,X,train,1.2.x\n"
    )
    with pytest.raises(ConfigError, match=r"line 2 \(P1\): column series_uid: '1.2.x' is not a DICOM UID"):
        read_manifest(manifest)


def test_cache_refuses_entries_outside_its_root(tmp_path: Path) -> None:
    from gliodeploy.data.cache import build_cache
    from gliodeploy.data.manifest import ManifestRow
    from gliodeploy.preprocessing import PreprocessConfig

    scan = write_pet_nifti(_volume(), tmp_path / "pet.nii.gz", _bids_sidecar("Bq/mL"))
    root = tmp_path / "deep" / "cache"
    for subject in ("../../escaped", "/tmp/abs", "..", "a/b"):
        row = ManifestRow(subject, scan, 1, "S", "X", "train")  # built by code, not by read_manifest
        with pytest.raises(InputError, match="cannot name a cache entry: it would leave"):
            build_cache([row], PreprocessConfig.tiny(), root, progress=False)
    assert not root.exists() and not list(tmp_path.rglob("*.npz"))


def test_cache_reads_the_manifest_series_uid(pet_ct_study: dict[str, Path], tmp_path: Path) -> None:
    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import ManifestRow
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = PreprocessConfig.tiny()
    study = pet_ct_study["ac_nac"]
    pet_row = ManifestRow("alone", pet_ct_study["pet"], 1, "S", "X", "train")
    chosen = ManifestRow("chosen", study, 1, "S", "X", "train", series_uid=_uid(pet_ct_study["pet"]))
    entries = build_cache([pet_row, chosen], cfg, tmp_path / "cache", progress=False)
    alone, picked = (load_cached(entries[s]) for s in ("alone", "chosen"))
    np.testing.assert_array_equal(alone.array, picked.array)
    nac = ManifestRow("nac", study, 1, "S", "X", "train", series_uid=_uid(pet_ct_study["nac"]))
    with pytest.raises(SuvError, match=r"subject nac .*CorrectedImage .* lacks ATTN"):
        build_cache([nac], cfg, tmp_path / "cache", progress=False)


def test_train_cli_refuses_an_unsafe_subject_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_experiment import write_tiny_experiment

    root = tmp_path / "cohort"
    root.mkdir()
    (root / "a.nii.gz").write_bytes(b"")
    manifest = root / "manifest.csv"
    rows = [f"s{i},a.nii.gz,{i % 2},A,X,train\n" for i in range(4)]
    manifest.write_text(MANIFEST_HEADER + "".join(rows) + "../../escaped,a.nii.gz,1,A,X,train\n")
    config = write_tiny_experiment(tmp_path / "exp.toml", "unsafe")
    run_dir = tmp_path / "run"
    code, err = run_cli(["train", str(config), "--manifest", str(manifest), "--out", str(run_dir)], capsys)
    assert code == 2 and err.startswith("error: manifest ") and "line 6: subject '../../escaped'" in err
    assert not list(tmp_path.rglob("*.npz")) and not (tmp_path.parent / "escaped.npz").exists()
