"""Evaluate the exported artifact: what is deployed is what was evaluated.

``gliodeploy evaluate RUN --artifact REPO`` scores one exported ``gliodeploy_ensemble`` version on the
manifest's test split through exactly the code of ``gliodeploy predict`` (the verified repository's ONNX
graph in ONNX Runtime, the client's reading, SUV and preprocessing; :class:`~gliodeploy.predict.offline.
OfflinePredictor`) and puts it beside the run's PyTorch fold models on the same scans (the training
preprocessing cache, as plain ``gliodeploy evaluate``): max |Δp| per fold and for the ensemble, decision
agreement at the version's operating point and, when every test scan has a label, both AUCs. Without
labels the output is the predictions alone. Nothing of the run is changed (no operating point written).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.data.manifest import NO_LABEL, ManifestRow
from gliodeploy.errors import InputError, ModelError
from gliodeploy.utils.atomic import atomic_write


@dataclass(frozen=True)
class ArtifactComparison:
    """The exported version's answers beside the PyTorch folds' on the same test scans."""

    repository: str
    version: int
    run: str
    manifest: str
    threshold: float
    subjects: tuple[str, ...]
    labels: np.ndarray  # NO_LABEL where unknown
    onnx_folds: np.ndarray  # [n, K] as served (temperature applied inside the graph)
    onnx: np.ndarray  # [n] ensemble probability
    torch_folds: np.ndarray  # [n, K] PyTorch, with the version's temperature
    providers: tuple[str, ...] = ()

    @property
    def torch(self) -> np.ndarray:
        """PyTorch ensemble probability: the mean of the folds, as the graph computes it."""
        return self.torch_folds.mean(axis=1)

    @property
    def labelled(self) -> bool:
        """Every scan has a label: metrics can be computed."""
        return bool(self.labels.size) and bool(np.all(self.labels != NO_LABEL))

    def to_dict(self) -> dict[str, Any]:
        """All figures, JSON-ready (``artifact.json``)."""
        onnx_dec = self.onnx >= self.threshold
        torch_dec = self.torch >= self.threshold
        fold_diff = np.abs(self.onnx_folds - self.torch_folds)
        doc: dict[str, Any] = {
            "repository": self.repository,
            "model": contract.ENSEMBLE_MODEL,
            "version": self.version,
            "run": self.run,
            "manifest": self.manifest,
            "runtime": {"onnxruntime_providers": list(self.providers)},
            "n": len(self.subjects),
            "threshold": self.threshold,
            "max_abs_diff": {
                "ensemble": float(np.max(np.abs(self.onnx - self.torch))),
                "folds": [float(v) for v in fold_diff.max(axis=0)],
            },
            "decisions": {
                "equal": int(np.sum(onnx_dec == torch_dec)),
                "onnx_recurrence": int(onnx_dec.sum()),
                "pytorch_recurrence": int(torch_dec.sum()),
                "differ": [s for s, a, b in zip(self.subjects, onnx_dec, torch_dec, strict=True) if a != b],
            },
            "metrics": None,
        }
        if self.labelled and len(set(self.labels.tolist())) == 2:
            from gliodeploy.evaluation.metrics import point_metrics

            doc["metrics"] = {
                "n_positive": int(self.labels.sum()),
                "onnx": point_metrics(self.labels, self.onnx, self.threshold),
                "pytorch": point_metrics(self.labels, self.torch, self.threshold),
            }
        doc["predictions"] = [
            {
                "subject": s,
                "label": None if y == NO_LABEL else int(y),
                "probability": float(p),
                "decision": contract.LABEL_NAMES[int(p >= self.threshold)],
                "fold_probabilities": [float(f) for f in folds],
                "pytorch_probability": float(t),
                "abs_diff": float(abs(p - t)),
            }
            for s, y, p, folds, t in zip(
                self.subjects, self.labels, self.onnx, self.onnx_folds, self.torch, strict=True
            )
        ]
        return doc


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The comparison in a few lines for people (stdout and ``artifact.md``)."""
    diff, dec = doc["max_abs_diff"], doc["decisions"]
    folds = ", ".join(f"fold {k} {v:.2g}" for k, v in enumerate(diff["folds"]))
    lines = [
        f"{doc['model']} v{doc['version']} ({doc['repository']}, ONNX Runtime as `gliodeploy predict`) vs "
        f"the PyTorch folds of {doc['run']} on {doc['n']} test scans",
        f"max |dp|: ensemble {diff['ensemble']:.2g}; {folds}",
        f"decisions at the operating point (threshold {doc['threshold']:.4g}): {dec['equal']}/{doc['n']} "
        f"equal (recurrence: exported {dec['onnx_recurrence']}, PyTorch {dec['pytorch_recurrence']})"
        + (f"; differ: {', '.join(dec['differ'])}" if dec["differ"] else ""),
    ]
    m = doc["metrics"]
    if m:
        lines.append(
            f"AUC: exported {m['onnx']['roc_auc']:.4f}, PyTorch {m['pytorch']['roc_auc']:.4f} "
            f"(n={doc['n']}, {m['n_positive']} recurrences); sensitivity/specificity at the threshold: "
            f"exported {m['onnx']['sensitivity']:.3f}/{m['onnx']['specificity']:.3f}, PyTorch "
            f"{m['pytorch']['sensitivity']:.3f}/{m['pytorch']['specificity']:.3f}"
        )
    else:
        lines.append("no labels on every test scan: predictions only, no AUC")
    return lines


def _predictions_csv(doc: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["subject", "label", "probability", "decision", "pytorch_probability", "abs_diff"])
    for p in doc["predictions"]:
        label = "" if p["label"] is None else p["label"]
        writer.writerow(
            [p["subject"], label, f"{p['probability']:.7f}", p["decision"], f"{p['pytorch_probability']:.7f}"]
            + [f"{p['abs_diff']:.3g}"]
        )
    return buffer.getvalue()


def write_artifact_report(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """``artifact.json``, ``artifact.md`` and ``artifact_predictions.csv`` in ``out`` (atomic writes)."""
    out.mkdir(parents=True, exist_ok=True)
    md = "\n".join(
        ["# Exported model vs PyTorch folds", "", *[f"- {line}" for line in summary_lines(doc)], ""]
    )
    return {
        "json": atomic_write(out / "artifact.json", json.dumps(doc, indent=2) + "\n"),
        "markdown": atomic_write(out / "artifact.md", md),
        "csv": atomic_write(out / "artifact_predictions.csv", _predictions_csv(doc)),
    }


def compare_artifact(
    run_dir: Path,
    repository: Path,
    rows: Sequence[ManifestRow],
    *,
    manifest: str,
    cache_root: Path,
    version: str | None = None,
) -> ArtifactComparison:
    """Run the exported version (``gliodeploy predict``'s code) and the run's PyTorch folds on ``rows``.

    Refuses a version that is not an export of this run's architecture/preprocessing (another fold
    count or preprocessing): the comparison would mean nothing.
    """
    from gliodeploy.evaluation import inference
    from gliodeploy.evaluation.metrics import apply_temperature
    from gliodeploy.predict.offline import OfflinePredictor
    from gliodeploy.training.rundir import RunDir

    predictor = OfflinePredictor(repository, version=version, device="cpu")
    run = RunDir(run_dir)
    plans = run.plans()
    meta = predictor.metadata
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = inference.preprocessing_config(plans, run.path)
    if PreprocessConfig.from_dict(meta.get("preprocessing") or {}).fingerprint() != cfg.fingerprint():
        raise ModelError(
            f"{predictor.version_dir}: its preprocessing differs from {run_dir}'s plans.json: not an export "
            "of this run"
        )
    models = run.load_fold_models()
    if meta.get("folds") != len(models):
        raise ModelError(
            f"{predictor.version_dir} has {meta.get('folds')} folds, {run_dir} has {len(models)}: not an "
            "export of this run"
        )
    onnx_folds, onnx = [], []
    for r in rows:  # one row at a time: each row has its own SUV fields (weight, dose)
        try:
            pred = predictor.predict_file(r.image, series_uid=r.series_uid, **r.suv_kwargs)
        except InputError as exc:  # keep the class (SuvError stays SuvError), name the subject
            raise type(exc)(f"subject {r.subject} ({r.image}): {exc}") from exc
        onnx_folds.append(pred.fold_probs)
        onnx.append(pred.probability)  # the graph's own ensemble output, as served
    volumes = inference.load_volumes(rows, cfg, cache_root)
    torch_folds = inference.predict_volumes(models, [volumes[r.subject].array for r in rows])
    temperature = (meta.get("operating_point") or {}).get("temperature")
    if temperature:  # the graph divides every fold's logit by it: score PyTorch the same way
        torch_folds = apply_temperature(torch_folds, temperature)
    return ArtifactComparison(
        repository=str(repository),
        version=predictor.version,
        run=str(run_dir),
        manifest=manifest,
        threshold=predictor.info.threshold,
        subjects=tuple(r.subject for r in rows),
        labels=np.array([r.label for r in rows], dtype=np.int64),
        onnx_folds=np.asarray(onnx_folds, dtype=np.float64),
        onnx=np.asarray(onnx, dtype=np.float64),
        torch_folds=np.asarray(torch_folds, dtype=np.float64),
        providers=tuple(predictor.providers),
    )
