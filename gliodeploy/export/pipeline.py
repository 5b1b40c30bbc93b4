"""``gliodeploy export``: training run -> new version of the Triton model repository.

The whole next state of the repository (kept versions, the new version of every model, every
configuration, the manifest) is built in a staging folder beside it and swapped in at once
(:mod:`gliodeploy.export.publish`): an interrupted export leaves the repository exactly as it was,
a finished one exactly the new state. Nothing is ever written inside the served repository.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.export.integrity import model_checksum_json
from gliodeploy.export.modelcard import package_versions, write_card
from gliodeploy.export.profiles import ExportProfile
from gliodeploy.export.publish import RepositoryUpdate
from gliodeploy.export.reference import REFERENCE_CASES, REFERENCE_FILE, storable, write_reference_cases
from gliodeploy.export.repository import MODELS, EnsembleSpec, write_configs
from gliodeploy.preprocessing import PreprocessConfig


@dataclass(frozen=True)
class ExportResult:
    """What an export produced."""

    repository: Path
    version: int
    parity_max_abs_diff: float
    files: list[Path]
    operating_point: dict[str, Any]


def synthetic_parity_inputs(
    cfg: PreprocessConfig, *, n: int = REFERENCE_CASES, seed: int = 1234
) -> np.ndarray:
    """``n`` synthetic FDOPA scans run through the real loader and preprocess(): ``[n, 1, X, Y, Z]``.

    The brain-cut guard is relaxed: these volumes only exercise the exported graph, and a synthetic
    head cut by a coarse test grid is still a realistic input for that.
    """
    import dataclasses

    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import preprocess
    from gliodeploy.synth import generate_cohort

    with tempfile.TemporaryDirectory(prefix="gliodeploy-parity-") as tmp:
        # The generator needs >= 4 subjects (both classes per site); only the first n are used.
        manifest = generate_cohort(
            tmp, n=max(n, 4), seed=seed, size="tiny", test_fraction=0.0, progress=False
        )

        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        loose = dataclasses.replace(cfg, max_brain_cut=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the relaxed brain-cut notice
            arrays = [preprocess(load_pet(Path(tmp) / r["image"]).image, loose).array for r in rows[:n]]
    return np.stack(arrays)[:, np.newaxis].astype(np.float32)


def _tensor_specs(spec: EnsembleSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inputs = [{"name": contract.INPUT_SUV, "datatype": "FP32", "shape": [-1, 1, *spec.grid_shape]}]
    outputs = [
        {"name": contract.OUTPUT_PROBABILITY, "datatype": "FP32", "shape": [-1, 1]},
        {"name": contract.OUTPUT_FOLD_PROBABILITIES, "datatype": "FP32", "shape": [-1, spec.num_folds]},
        {"name": contract.OUTPUT_LOGIT, "datatype": "FP32", "shape": [-1, 1]},
    ]
    return inputs, outputs


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "evaluation" / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt {path}: {exc}") from exc


def export_models(
    fold_models: Sequence[Any],
    plans: dict[str, Any],
    out: str | os.PathLike[str],
    *,
    profile: ExportProfile | None = None,
    parity_inputs: np.ndarray | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    operating_point: dict[str, Any],
) -> ExportResult:
    """Export trained fold models (with their run's ``plans``) as the next version of ``out``.

    ``operating_point`` (an :class:`~gliodeploy.evaluation.operating_point.OperatingPoint` dict, see
    :func:`resolve_operating_point`) becomes the version's decision rule: its threshold and
    temperature go into the graph's configuration and metadata. The exported graph must give PyTorch's
    probabilities (tolerance) and decisions at that threshold on the parity scans, else nothing is
    published; those scans (rounded to float16 first, so the file can store them exactly) and PyTorch's
    answers become the version's reference cases (:mod:`gliodeploy.export.reference`).
    """
    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.onnx_export import export_onnx, export_torchscript, runtime_requirements
    from gliodeploy.runtime.engines import export_int8
    from gliodeploy.serving.triton_models import GEOMETRY_MODEL, ONNX_RUNTIME_MODEL

    profile = profile or ExportProfile()
    repo = Path(out)
    try:
        cfg = PreprocessConfig.from_dict(plans["preprocessing"])
    except KeyError:
        raise ModelError("plans have no 'preprocessing' section") from None
    threshold = float(operating_point["threshold"])
    ensemble = EnsembleModule(list(fold_models), temperature=operating_point.get("temperature"))
    spec = EnsembleSpec(
        grid_shape=tuple(cfg.shape),
        num_folds=ensemble.num_folds,
        format=profile.format,
        preprocessing_json=json.dumps(cfg.to_dict(), sort_keys=True),
        threshold=threshold,
        operating_point_json=json.dumps(operating_point, sort_keys=True),
    )
    with RepositoryUpdate(repo) as update:  # first: a repository export cannot update fails fast
        if parity_inputs is None:
            parity_inputs = synthetic_parity_inputs(cfg)
        parity_inputs = storable(parity_inputs)
        version = update.version
        staged = {m: update.staging / m / str(version) for m in MODELS}
        for folder in staged.values():
            folder.mkdir(parents=True, mode=0o755)
        ens_dir = staged[contract.ENSEMBLE_MODEL]
        if profile.format == "onnx":
            report = export_onnx(
                ensemble,
                ens_dir / spec.model_filename,
                input_shape=spec.grid_shape,
                parity_inputs=parity_inputs,
                fp16=profile.fp16,
                threshold=threshold,
            )
            shutil.copyfile(ONNX_RUNTIME_MODEL, ens_dir / "model.py")
            int8 = export_int8(ens_dir / spec.model_filename, plans, profile)  # CPU precision int8/auto
        else:
            int8 = None
            report = export_torchscript(
                ensemble,
                ens_dir / spec.model_filename,
                input_shape=spec.grid_shape,
                parity_inputs=parity_inputs,
                threshold=threshold,
            )
        references = write_reference_cases(
            ens_dir, parity_inputs, report.expected, threshold, fp16=profile.fp16
        )
        inputs, outputs = _tensor_specs(spec)
        common = {
            "version": version,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": str(Path(run_dir).resolve()) if run_dir else None,
            "architecture": plans.get("model"),
            "folds": spec.num_folds,
            "training": plans.get("training"),
            "experiment": plans.get("experiment"),
            "preprocessing": cfg.to_dict(),
            "label_names": list(plans.get("label_names") or contract.LABEL_NAMES),
            "positive_label": plans.get("positive_label", 1),
            "threshold": threshold,
            "operating_point": operating_point,
            "validation": plans.get("validation"),
            "metrics": _read_metrics(Path(run_dir)) if run_dir else None,
            "distillation": plans.get("distillation"),
            "packages": package_versions(),
            "profile": profile.to_dict(),
        }
        write_card(
            ens_dir,
            {
                "model": contract.ENSEMBLE_MODEL,
                "description": "Fold ensemble: in-graph normalisation, K fold CNNs, mean probability.",
                **common,
                "format": profile.format,
                "fp16": profile.fp16,
                "parity": report.to_dict(),
                "int8": int8,
                "reference_cases": {
                    "file": REFERENCE_FILE,
                    "tolerance": references.default_tolerance,
                    "cases": references.summary(),
                },
                # Oldest ONNX Runtime / Triton that read the graph (IR version and opset decide).
                "runtime": runtime_requirements(ens_dir / spec.model_filename)
                if spec.format == "onnx"
                else None,
                "inputs": inputs,
                "outputs": outputs,
            },
        )
        geo_dir = staged[contract.GEOMETRY_MODEL]
        shutil.copyfile(GEOMETRY_MODEL, geo_dir / "model.py")
        (geo_dir / "preprocessing.json").write_text(
            json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        native_inputs = [
            {"name": contract.INPUT_NATIVE_VOLUME, "datatype": "FP32", "shape": [-1, -1, -1]},
            {"name": contract.INPUT_SPACING, "datatype": "FP64", "shape": [3]},
            {"name": contract.INPUT_ORIGIN, "datatype": "FP64", "shape": [3]},
            {"name": contract.INPUT_DIRECTION, "datatype": "FP64", "shape": [9]},
        ]
        write_card(
            geo_dir,
            {
                "model": contract.GEOMETRY_MODEL,
                "description": "Native-grid SUV volume -> model grid (gliodeploy.preprocessing.preprocess).",
                **common,
                "inputs": native_inputs,
                "outputs": [
                    {"name": contract.INPUT_SUV, "datatype": "FP32", "shape": [1, 1, *spec.grid_shape]}
                ],
            },
        )
        write_card(
            staged[contract.NATIVE_PIPELINE_MODEL],
            {
                "model": contract.NATIVE_PIPELINE_MODEL,
                "description": "Triton ensemble: gliodeploy_geometry -> gliodeploy_ensemble (same version).",
                **common,
                "inputs": native_inputs,
                "outputs": [{**o, "shape": [1, *o["shape"][1:]]} for o in outputs],
            },
        )
        spec = replace(spec, model_checksum_json=model_checksum_json(ens_dir, version))
        written = [*staged.values(), *write_configs(update.staging, spec, profile)]
        update.commit()
    files = [repo / p.relative_to(update.staging) for p in written]
    return ExportResult(
        repository=repo,
        version=version,
        parity_max_abs_diff=report.max_abs_diff,
        files=files,
        operating_point=operating_point,
    )


def resolve_operating_point(
    run_dir: str | os.PathLike[str], threshold: float | None = None
) -> dict[str, Any]:
    """The decision rule to ship: ``RUN_DIR/operating_point.json`` (from ``gliodeploy evaluate``) or,
    when ``threshold`` is given, that number, with the OOF sensitivity/specificity it gives when the
    run has OOF predictions. Never a silent default: a run never evaluated needs ``threshold``.
    """
    from gliodeploy.errors import ConfigError
    from gliodeploy.evaluation.operating_point import (
        OPERATING_POINT_FILE,
        choose_operating_point,
        file_sha256,
        read_operating_point,
    )
    from gliodeploy.evaluation.rundata import read_oof
    from gliodeploy.training.rundir import RunDir

    run = RunDir(run_dir)
    if threshold is None:
        op = read_operating_point(run.path)
        if op is None:
            raise ConfigError(
                f"{run.path} has no {OPERATING_POINT_FILE}: it was never evaluated, so no decision threshold "
                f"was chosen on its out-of-fold predictions. Run `gliodeploy evaluate {run.path}` first, or "
                "pass --threshold to ship a threshold of your own"
            )
        return op.to_dict()
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be in (0, 1), got {threshold}")
    if run.oof_csv.is_file():
        oof = read_oof(run.oof_csv)
        return choose_operating_point(
            oof.labels,
            oof.scores,
            repr(float(threshold)),
            validation_mode=run.validation_mode(),
            oof_sha256=file_sha256(run.oof_csv),
        ).to_dict()
    return {
        "threshold": float(threshold),
        "method": "fixed",
        "fitted_on": "given by the user at export; no out-of-fold predictions to measure it on",
        "validation_mode": run.validation_mode(),
        "n": 0,
        "n_positive": 0,
        "sensitivity": None,
        "specificity": None,
        "temperature": None,
        "oof_sha256": None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def export_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    profile: ExportProfile | None = None,
    parity_inputs: np.ndarray | None = None,
    threshold: float | None = None,
    distilled: bool = False,
) -> ExportResult:
    """Export a finished training run (``gliodeploy train`` output) to the Triton repository ``out``.

    The decision rule comes from :func:`resolve_operating_point` (``threshold`` overrides it).
    ``distilled=True`` ships the run's distilled student (``gliodeploy distill``) instead of its K
    folds, with the ensemble's operating point, and only if it was measured within
    :data:`~gliodeploy.training.distill.MAX_AUC_LOSS` of the ensemble on held-out scans.
    """
    from gliodeploy.training.rundir import RunDir

    run = RunDir(run_dir)
    plans = run.plans()
    if distilled:
        from gliodeploy.training.distill import load_distilled

        student, record = load_distilled(run_dir)
        ok, why = record.deployable()
        if not ok:
            raise ConfigError(
                f"refusing to export the distilled model of {run.path}: {why}; export the ensemble"
            )
        models = [student]
        plans = {**plans, "model": record.info["model"], "distillation": record.summary(why)}
    else:
        models = run.load_fold_models()  # an unfinished or corrupt run is the first thing to say
    operating_point = resolve_operating_point(run_dir, threshold)
    if distilled:
        operating_point["fitted_on"] += " (the ensemble's; its distilled student inherits it)"
    return export_models(
        models,
        plans,
        out,
        profile=profile,
        parity_inputs=parity_inputs,
        run_dir=run_dir,
        operating_point=operating_point,
    )
