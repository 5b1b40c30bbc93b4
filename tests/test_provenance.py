"""The audit trail of every prediction (issue 16): input digests, DICOM series UID, SUV inputs with their
sources, gliodeploy version, model checksum and operating point, in the JSON and CSV of
``gliodeploy-client predict`` (real bundled Triton server) and of ``gliodeploy predict`` (offline).

Expected values come from the files themselves: hashlib on the bytes, pydicom on the slices, json on the
sidecar, csv on participants.tsv, hashlib on the exported version's SHA256SUMS.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from gliodeploy import __version__, contract
from gliodeploy.client.api import GliodeployClient
from gliodeploy.client.output import PROVENANCE_COLUMNS, to_csv
from gliodeploy.client.provenance import series_sha256
from gliodeploy.errors import ModelError
from gliodeploy.io import write_pet_dicom_series
from gliodeploy.io.bids import read_json

WEIGHT, DOSE, HALF_LIFE = 71.5, 187.0e6, 6586.2
INJECTION = datetime(2021, 3, 4, 9, 0, 0)
SCAN = INJECTION + timedelta(minutes=20)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(program: str, *args: str) -> subprocess.CompletedProcess:
    module = "gliodeploy.client.cli" if program == "client" else "gliodeploy.cli"
    code = f"import sys; sys.argv = ['x', *sys.argv[1:]]; from {module} import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic NIfTI scan (sidecar + participants.tsv) and a BQML DICOM series of known SUV inputs."""
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("prov")
    manifest = Path(
        generate_cohort(root / "cohort", n=4, seed=3, size="tiny", test_fraction=0.0, progress=False)
    )
    with open(manifest, newline="") as fh:
        nifti = (manifest.parent / next(csv.DictReader(fh))["image"]).resolve()
    activity = sitk.ReadImage(str(nifti), sitk.sitkFloat32)
    dicom = write_pet_dicom_series(
        activity,
        root / "dicom",
        weight_kg=WEIGHT,
        injected_dose_bq=DOSE,
        injection_datetime=INJECTION,
        series_datetime=SCAN,
        half_life_s=HALF_LIFE,
        uid_seed="provenance-test",
    )
    return {"nifti": nifti, "dicom": dicom, "participants": manifest.parent / "participants.tsv"}


def _model_checksum(repo: Path) -> str:
    return _sha(repo / contract.ENSEMBLE_MODEL / "1" / "SHA256SUMS")


def _check_nifti(result: dict, cohort: dict[str, Path], repo: Path) -> None:
    nifti = cohort["nifti"]
    sidecar_path = nifti.with_name(nifti.name.replace(".nii.gz", ".json"))
    sidecar = read_json(sidecar_path)
    scan, facts = result["scan"], result["suv"]["facts"]
    assert scan["format"] == "nifti" and scan["sha256"] == _sha(nifti)
    assert scan["bytes"] == nifti.stat().st_size
    assert Path(scan["sidecar"]) == sidecar_path and scan["sidecar_sha256"] == _sha(sidecar_path)
    with open(cohort["participants"], newline="") as fh:
        rows = {r["participant_id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    subject = nifti.name.split("_")[0]
    assert facts["weight_kg"]["value"] == pytest.approx(float(rows[subject]["weight"]))
    assert facts["weight_kg"]["source"] == "participants_tsv"
    assert Path(scan["weight_table"]).resolve() == cohort["participants"].resolve()
    assert scan["weight_table_sha256"] == _sha(cohort["participants"])
    assert facts["injected_dose_bq"]["source"] == "bids_sidecar"
    assert "InjectedRadioactivity" in facts["injected_dose_bq"]["detail"]
    scale = {"MBq": 1e6, "kBq": 1e3, "Bq": 1.0}[sidecar["InjectedRadioactivityUnits"]]
    assert facts["injected_dose_bq"]["value"] == pytest.approx(sidecar["InjectedRadioactivity"] * scale)
    assert facts["units"] == {
        "value": sidecar["Units"],
        "source": "bids_sidecar",
        "detail": f"{sidecar_path} Units",
    }
    for name in ("injection_time", "scan_time", "half_life_s"):
        assert facts[name]["source"] == "bids_sidecar", name
    decay_s = sidecar["ImageDecayCorrectionTime"] - sidecar["InjectionStart"]
    assert facts["decay_time_s"]["value"] == pytest.approx(decay_s)
    half_life = facts["half_life_s"]["value"]
    assert facts["decay_factor"]["value"] == pytest.approx(2.0 ** (-decay_s / half_life))
    assert result["suv"]["units"] == "SUVbw"
    _check_model(result, repo)


def _check_dicom(result: dict, cohort: dict[str, Path], repo: Path) -> None:
    folder = cohort["dicom"]
    files = sorted(folder.iterdir())
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    listing = "".join(f"{_sha(f)}  {f.name}\n" for f in files)
    scan, facts = result["scan"], result["suv"]["facts"]
    assert scan["format"] == "dicom" and scan["series_uid"] == str(first.SeriesInstanceUID)
    assert scan["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert scan["n_files"] == len(files) and scan["bytes"] == sum(f.stat().st_size for f in files)
    drug = first.RadiopharmaceuticalInformationSequence[0]
    assert facts["weight_kg"] == {
        "value": float(first.PatientWeight),
        "source": "dicom",
        "detail": "PatientWeight (0010,1030)",
    }
    assert facts["injected_dose_bq"]["value"] == pytest.approx(float(drug.RadionuclideTotalDose))
    assert facts["half_life_s"]["value"] == pytest.approx(float(drug.RadionuclideHalfLife))
    assert facts["units"]["value"] == str(first.Units) == "BQML"
    assert {
        facts[k]["source"] for k in ("injected_dose_bq", "half_life_s", "scan_time", "injection_time")
    } == {"dicom"}
    assert facts["injection_time"]["value"] == INJECTION.isoformat()
    assert facts["scan_time"]["value"] == SCAN.isoformat()
    assert facts["decay_time_s"]["value"] == pytest.approx(1200.0)
    assert facts["decay_factor"]["value"] == pytest.approx(2.0 ** (-1200.0 / HALF_LIFE))
    _check_model(result, repo)


def _check_model(result: dict, repo: Path) -> None:
    prov = result["provenance"]
    assert prov["gliodeploy_version"] == __version__
    assert prov["model"]["checksum"] == _model_checksum(repo) and prov["model"]["version"] == "1"
    assert prov["model"]["exported_by"] == __version__
    assert prov["operating_point"]["threshold"] == result["threshold"] == 0.5


def test_series_digest_is_the_sha256sum_listing(tmp_path: Path) -> None:
    for name, data in (("b.dcm", b"second"), ("a.dcm", b"first"), ("c.dcm", b"")):
        (tmp_path / name).write_bytes(data)
    listing = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {n}\n"
        for n, d in (("a.dcm", b"first"), ("b.dcm", b"second"), ("c.dcm", b""))
    )
    files = [str(tmp_path / n) for n in ("c.dcm", "a.dcm", "b.dcm")]  # order given does not matter
    assert series_sha256(files, tmp_path) == (hashlib.sha256(listing.encode()).hexdigest(), 11)


@pytest.mark.server
def test_served_json_and_csv_carry_the_audit_trail(
    request: pytest.FixtureRequest, cohort: dict[str, Path], tiny_repository: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    proc = _cli(
        "client", "predict", str(cohort["nifti"]), str(cohort["dicom"]), "--url", server.http_url, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    nifti, dicom = doc["results"]
    _check_nifti(nifti, cohort, tiny_repository)
    _check_dicom(dicom, cohort, tiny_repository)
    assert nifti["provenance"]["preprocessed_by"] == f"client (gliodeploy {__version__})"
    assert doc["model"]["checksum"]["sha256sums_sha256"] == _model_checksum(tiny_repository)

    proc = _cli(
        "client", "predict", str(cohort["dicom"]), "--url", server.grpc_url, "--protocol", "grpc", "--csv"
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert set(PROVENANCE_COLUMNS) <= set(row)
    assert row["input_sha256"] == dicom["scan"]["sha256"] and row["series_uid"] == dicom["scan"]["series_uid"]
    assert float(row["weight_kg"]) == WEIGHT and row["weight_source"] == "dicom: PatientWeight (0010,1030)"
    assert float(row["injected_dose_bq"]) == DOSE and row["dose_source"].startswith(
        "dicom: RadionuclideTotalDose"
    )
    assert row["injection_time"] == INJECTION.isoformat() and row["scan_time"] == SCAN.isoformat()
    assert float(row["half_life_s"]) == HALF_LIFE and float(row["decay_factor"]) == pytest.approx(
        2.0 ** (-1200.0 / HALF_LIFE)
    )
    assert (
        row["model_checksum"] == _model_checksum(tiny_repository) and row["gliodeploy_version"] == __version__
    )
    assert row["suv_units"] == "SUVbw" and row["units_original"] == "BQML"


@pytest.mark.server
def test_command_line_sources_and_server_preprocessing(
    request: pytest.FixtureRequest, cohort: dict[str, Path], tiny_repository: Path
) -> None:
    server = request.getfixturevalue("triton_server")
    with GliodeployClient(server.http_url, timeout=60) as client:
        pred = client.predict_file(cohort["dicom"], weight_kg=80.0, server_preprocess=True)
        bare = client.predict_volume(pred_grid(client))
    facts = pred.suv["facts"]
    assert facts["weight_kg"] == {"value": 80.0, "source": "argument", "detail": "--weight (weight_kg)"}
    assert facts["injected_dose_bq"]["source"] == "dicom"
    assert pred.provenance["preprocessed_by"].startswith(f"server ({contract.NATIVE_PIPELINE_MODEL}")
    assert pred.provenance["model"]["called"] == contract.NATIVE_PIPELINE_MODEL
    assert pred.provenance["model"]["checksum"] == _model_checksum(tiny_repository)
    # An array sent as is: no input file, but the model and its operating point are still named.
    assert bare.scan == {} and bare.provenance["model"]["checksum"] == _model_checksum(tiny_repository)
    row = next(csv.DictReader(io.StringIO(to_csv([bare]))))
    assert row["input_sha256"] == "" and row["model_checksum"] == _model_checksum(tiny_repository)


def pred_grid(client: GliodeployClient):  # noqa: ANN201 - numpy array
    import numpy as np

    return np.random.default_rng(0).gamma(2.0, 0.6, client.info().grid_shape).astype(np.float32)


def test_offline_predict_carries_the_same_audit_trail(cohort: dict[str, Path], repo: Path) -> None:
    proc = _cli(
        "gliodeploy", "predict", str(repo), str(cohort["nifti"]), str(cohort["dicom"]), "--json", "-q"
    )
    assert proc.returncode == 0, proc.stderr
    nifti, dicom = json.loads(proc.stdout)["results"]
    _check_nifti(nifti, cohort, repo)
    _check_dicom(dicom, cohort, repo)
    proc = _cli("gliodeploy", "predict", str(repo), str(cohort["nifti"]), "--csv", "-q", "--dose", "190")
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert row["input_sha256"] == _sha(cohort["nifti"]) and row["model_checksum"] == _model_checksum(repo)
    assert (
        float(row["injected_dose_bq"]) == 190e6
        and row["dose_source"] == "argument: --dose (injected_dose_bq)"
    )
    assert row["weight_source"].startswith("participants_tsv: ")


def test_verify_refuses_an_edited_model_checksum(repo: Path, tmp_path: Path) -> None:
    from gliodeploy.export.modelcard import verify_repository

    copy = tmp_path / "model_repository"
    shutil.copytree(repo, copy)
    config = copy / contract.ENSEMBLE_MODEL / "configs" / "local.pbtxt"
    text = config.read_text()
    published = _model_checksum(repo)
    assert published in text
    config.write_text(text.replace(published, "0" * 64))
    with pytest.raises(ModelError, match=contract.PARAM_MODEL_CHECKSUM):
        verify_repository(copy)
