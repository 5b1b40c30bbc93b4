"""Write a synthetic FDOPA PET cohort to disk: BIDS-like layout plus the training manifest.

Layout::

    OUT/
      dataset_description.json  participants.tsv  participants.json
      cohort_summary.json   counts, ground-truth TBRmax and shape-feature AUCs, the lesion model
      manifest.csv          training contract + ground truth (written last)
      sub-001/pet/sub-001_pet.nii.gz + sub-001_pet.json       (or sub-001/pet/dicom/ for DICOM subjects)
      derivatives/truth/sub-001/pet/sub-001_desc-lesion_mask.nii.gz   (ground-truth lesion, image grid)

Every file is written atomically; ``manifest.csv`` comes last, so a cohort with a manifest is complete.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from gliodeploy import __version__
from gliodeploy.errors import ConfigError, InputError
from gliodeploy.io.dicom_writer import write_pet_dicom_series
from gliodeploy.io.nifti_writer import write_pet_nifti
from gliodeploy.synth.lesion import DEFAULT_LESION_MODEL, LesionModel
from gliodeploy.synth.plan import STUDY_TEST_FRACTION, PlannedSubject, plan_cohort
from gliodeploy.synth.scanners import SCANNERS, get_size
from gliodeploy.synth.subject import F18_HALF_LIFE_S, SyntheticSubject, generate_subject
from gliodeploy.synth.summary import summarize_rows
from gliodeploy.utils.atomic import atomic_path, atomic_write

#: Philips CNTS images: Bq/mL per stored count, written as private tag (7053,1009).
_PHILIPS_ACTIVITY_SCALE = 0.5

GENERATOR_NAME = "gliodeploy synth"
#: Manifest columns: the training contract first, then ground truth (ignored by training).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "subject",
    "image",
    "label",
    "scanner",
    "site",
    "split",
    "weight_kg",
    "true_label",
    "label_flipped",
    "tbr_max_true",
    "tbr_mean_true",
    "tsr_true",
    "lesion_center_mm",
    "lesion_volume_ml",
    "lesion_radius_mm",
    "edge_width_mm",
    "texture_amplitude",
    "necrosis_fraction",
    "n_foci",
    "lesion_mask",
    "contralateral_center_mm",
    "healthy_brain_suv",
    "striatum_suv",
    "cavity",
    "head_translation_mm",
    "head_rotation_deg",
    "calibration",
    "size",
)
PARTICIPANT_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "label",
    "scanner",
    "site",
    "split",
    "weight",
    "age",
    "sex",
)
#: Cohort-level ground truth: counts, separability (TBRmax and shape-feature AUCs), the lesion model.
SUMMARY_NAME = "cohort_summary.json"
_OWN_ENTRIES = (
    "manifest.csv",
    SUMMARY_NAME,
    "participants.tsv",
    "participants.json",
    "dataset_description.json",
    "derivatives",
)


def _triple(values: Iterable[float]) -> str:
    """``x;y;z`` with 0.01 mm precision (commas would clash with the CSV)."""
    return ";".join(f"{v:.2f}" for v in values)


def _write_image(image: sitk.Image, target: Path) -> None:
    with atomic_path(target) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def _write_dicom(result: SyntheticSubject, target: Path, *, seed: int, index: int, subject: str) -> None:
    """Write the scan as a DICOM series the way its vendor does (Philips: CNTS + private scale factors)."""
    truth, sidecar = result.truth, result.sidecar
    # A fixed study date per subject keeps files reproducible; the clock times come from the sidecar.
    injection = datetime.combine(
        date(2020, 1, 1) + timedelta(days=index), time.fromisoformat(sidecar["TimeZero"])
    )
    scan = injection + timedelta(seconds=sidecar["ScanStart"])
    vendor: dict[str, Any] = {"units": "BQML"}
    if SCANNERS[truth.scanner].manufacturer == "Philips":
        scale = _PHILIPS_ACTIVITY_SCALE
        suv_per_bqml = (
            truth.weight_kg * 1000.0 / (truth.injected_dose_bq * 2.0 ** (-truth.delay_s / F18_HALF_LIFE_S))
        )
        vendor = {
            "units": "CNTS",
            "philips_activity_scale": scale,
            "philips_suv_factor": scale * suv_per_bqml,
        }
    write_pet_dicom_series(
        result.image,
        target,
        weight_kg=truth.weight_kg,
        injected_dose_bq=truth.injected_dose_bq,
        injection_datetime=injection,
        series_datetime=scan,
        manufacturer=sidecar["Manufacturer"],
        model_name=sidecar["ManufacturersModelName"],
        patient_id=subject,
        patient_name=subject,
        frame_duration_s=float(sidecar["FrameDuration"][0]),
        uid_seed=f"gliodeploy-synth-{seed}-{subject}",
        **vendor,
    )


def write_subject(
    out_dir: Path,
    planned: PlannedSubject,
    *,
    seed: int,
    size: str,
    lesion_model: LesionModel | None = None,
) -> dict[str, str]:
    """Simulate and write one subject; returns its manifest row (and participants fields)."""
    result: SyntheticSubject = generate_subject(
        planned.index,
        label=planned.true_label,
        scanner=planned.scanner,
        seed=seed,
        size=size,
        subject=planned.subject,
        lesion_model=lesion_model,
    )
    truth = result.truth
    pet_dir = out_dir / planned.subject / "pet"
    pet_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{planned.subject}_pet"
    if planned.dicom:
        image_path = pet_dir / "dicom"
        if image_path.exists():  # a leftover of an interrupted run: the series is rewritten whole
            shutil.rmtree(image_path)
        _write_dicom(result, image_path, seed=seed, index=planned.index, subject=planned.subject)
    else:
        image_path = write_pet_nifti(result.image, pet_dir / f"{stem}.nii.gz", result.sidecar)
    mask_path = (
        out_dir
        / "derivatives"
        / "truth"
        / planned.subject
        / "pet"
        / f"{planned.subject}_desc-lesion_mask.nii.gz"
    )
    _write_image(truth.lesion_mask, mask_path)
    return {
        "subject": planned.subject,
        "image": image_path.relative_to(out_dir).as_posix(),
        "label": str(planned.label),
        "scanner": planned.scanner,
        "site": planned.site,
        "split": planned.split,
        "weight_kg": f"{truth.weight_kg:.1f}",
        "true_label": str(truth.true_label),
        "label_flipped": str(int(planned.label_flipped)),
        "tbr_max_true": f"{truth.tbr_max_true:.4f}",
        "tbr_mean_true": f"{truth.tbr_mean_true:.4f}",
        "tsr_true": f"{truth.tsr_true:.4f}",
        "lesion_center_mm": _triple(truth.lesion_center_mm),
        "lesion_volume_ml": f"{truth.lesion_volume_ml:.3f}",
        "lesion_radius_mm": f"{truth.lesion_radius_mm:.2f}",
        "edge_width_mm": f"{truth.edge_width_mm:.2f}",
        "texture_amplitude": f"{truth.texture_amplitude:.4f}",
        "necrosis_fraction": f"{truth.necrosis_fraction:.4f}",
        "n_foci": str(truth.n_foci),
        "lesion_mask": mask_path.relative_to(out_dir).as_posix(),
        "contralateral_center_mm": _triple(truth.contralateral_center_mm),
        "healthy_brain_suv": f"{truth.healthy_brain_suv:.4f}",
        "striatum_suv": f"{truth.striatum_suv:.4f}",
        "cavity": str(int(truth.cavity)),
        "head_translation_mm": _triple(truth.head_translation_mm),
        "head_rotation_deg": _triple(truth.head_rotation_deg),
        "calibration": f"{truth.calibration:.4f}",
        "size": size,
        # participants.tsv only
        "age": str(truth.age),
        "sex": truth.sex,
    }


def _worker_init() -> None:
    # One ITK thread per process: the pool already uses the cores.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise InputError(
            f"output folder {out_dir} is not empty; pass --overwrite to replace a synthetic cohort there"
        )
    description = out_dir / "dataset_description.json"
    try:
        generated = (
            json.loads(description.read_text(encoding="utf-8")).get("GeneratedBy", [{}])[0].get("Name")
        )
    except (OSError, ValueError, AttributeError, IndexError):
        generated = None
    if generated != GENERATOR_NAME:
        raise InputError(
            f"output folder {out_dir} is not empty and is not a cohort written by {GENERATOR_NAME} "
            f"(no such dataset_description.json): refusing to delete its content, choose another folder"
        )
    for entry in out_dir.iterdir():
        if entry.name in _OWN_ENTRIES or (entry.is_dir() and entry.name.startswith("sub-")):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _csv_text(rows: list[dict[str, str]], columns: tuple[str, ...], delimiter: str = ",") -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=columns, delimiter=delimiter, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _participants(rows: list[dict[str, str]]) -> str:
    out = [{**r, "participant_id": r["subject"], "weight": r["weight_kg"]} for r in rows]
    return _csv_text(out, PARTICIPANT_COLUMNS, delimiter="\t")


_PARTICIPANTS_JSON = {
    "label": {
        "Description": "recorded diagnosis (after label noise)",
        "Levels": {"0": "TRC", "1": "recurrence"},
    },
    "scanner": {"Description": "PET system"},
    "site": {"Description": "imaging centre"},
    "split": {"Description": "train = cross-validation site, test = external site"},
    "weight": {"Description": "body weight", "Units": "kg"},
    "age": {"Description": "age at scan", "Units": "year"},
    "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
}


def generate_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n: int = 196,
    seed: int = 0,
    size: str = "full",
    test_fraction: float = STUDY_TEST_FRACTION,
    dicom_fraction: float = 0.0,
    label_noise: float = 0.05,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    lesion_model: LesionModel = DEFAULT_LESION_MODEL,
) -> Path:
    """Generate a synthetic FDOPA PET cohort in ``out_dir`` and return the path of its ``manifest.csv``.

    Args:
        out_dir: output folder; must be empty or absent (or a previous synthetic cohort with
            ``overwrite=True``, whose generated files are then deleted first).
        n: number of subjects (both sites).
        seed: cohort seed; the same arguments give byte-identical images, whatever ``workers``.
        size: ``full`` (native ~2 mm voxels), ``small`` (~4 mm) or ``tiny`` (~8 mm, for tests).
        test_fraction: share of subjects at the external test site (the study: 32/196).
        dicom_fraction: share of subjects written as DICOM series instead of NIfTI.
        label_noise: share of recorded labels flipped at each site.
        workers: processes to use (1 = in this process).
        progress: show a progress bar.
        overwrite: replace a previous synthetic cohort in ``out_dir``.
        lesion_model: class-conditional lesion distributions (:mod:`gliodeploy.synth.lesion`).

    Raises:
        ConfigError: an argument is out of range. InputError: ``out_dir`` is unusable.
    """
    get_size(size)  # validate before touching the disk
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    plan = plan_cohort(
        n, seed=seed, test_fraction=test_fraction, label_noise=label_noise, dicom_fraction=dicom_fraction
    )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan), desc=f"synth {size}", unit="subject", disable=not progress)
    rows: list[dict[str, str]] = []
    try:
        if workers == 1:
            for planned in plan:
                rows.append(write_subject(out, planned, seed=seed, size=size, lesion_model=lesion_model))
                bar.update(1)
        else:
            # Never fork a process whose ITK thread pool may be running: workers come from a fork
            # server that has only imported the simulator (cheaper than spawning fresh interpreters).
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["gliodeploy.synth.cohort", "nilearn.datasets"])
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = [
                    pool.submit(write_subject, out, p, seed=seed, size=size, lesion_model=lesion_model)
                    for p in plan
                ]
                for future in futures:
                    rows.append(future.result())
                    bar.update(1)
    finally:
        bar.close()

    description = {
        "Name": f"gliodeploy synthetic 18F-FDOPA PET cohort (n={n}, seed={seed}, size={size})",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["gliodeploy synth (simulated data, no patient)"],
        "GeneratedBy": [
            {
                "Name": GENERATOR_NAME,
                "Version": __version__,
                "Description": (
                    f"n={n} seed={seed} size={size} test_fraction={test_fraction} "
                    f"dicom_fraction={dicom_fraction} label_noise={label_noise}"
                ),
            }
        ],
    }
    atomic_write(out / "dataset_description.json", json.dumps(description, indent=2) + "\n")
    atomic_write(out / "participants.tsv", _participants(rows))
    atomic_write(out / "participants.json", json.dumps(_PARTICIPANTS_JSON, indent=2) + "\n")
    summary = {
        "generator": description["GeneratedBy"][0],
        **summarize_rows(rows).to_dict(),
        "lesion_model": lesion_model.to_dict(),
    }
    atomic_write(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return atomic_write(out / "manifest.csv", _csv_text(rows, MANIFEST_COLUMNS))
