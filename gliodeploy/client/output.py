"""Render batch results for people (one line per scan) and for machines (JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from gliodeploy.client.api import ModelInfo, Prediction, ScanFailure

#: SUV facts flattened into CSV: ``<fact>`` holds the value, ``<name>_source`` "kind: detail".
_CSV_FACTS: tuple[tuple[str, str], ...] = (
    ("weight_kg", "weight"),
    ("injected_dose_bq", "dose"),
    ("injection_time", "injection_time"),
    ("scan_time", "scan_time"),
    ("half_life_s", "half_life"),
)
#: The audit-trail columns (the JSON output carries the full ``scan``, ``suv`` and ``provenance`` blocks).
PROVENANCE_COLUMNS = [
    "input_sha256",
    "input_bytes",
    "sidecar_sha256",
    "series_uid",
    "suv_units",
    "units_original",
    *(c for fact, name in _CSV_FACTS for c in (fact, f"{name}_source")),
    "decay_factor",
    "suv_factor",
    "gliodeploy_version",
    "preprocessed_by",
    "model_checksum",
]

CSV_COLUMNS = [
    "source",
    "ok",
    "probability",
    "label",
    "label_name",
    "threshold",
    "fold_spread",
    "fold_min",
    "fold_max",
    "fold_probs",
    "model_name",
    "model_version",
    "time_read",
    "time_suv",
    "time_preprocess",
    "time_request",
    "time_total",
    "threshold_method",
    "expected_sensitivity",
    "expected_specificity",
    *PROVENANCE_COLUMNS,
    "error_type",
    "error",
]


def human_line(result: Prediction | ScanFailure) -> str:
    """``scan: P(recurrence)=0.731 -> recurrence (threshold 0.50), folds 0.65-0.80 (sd 0.05) [model v1]``."""
    if isinstance(result, ScanFailure):
        return f"{result.source}: FAILED ({result.error_type}) {result.error}"
    return (
        f"{result.source}: P(recurrence)={result.probability:.3f} -> {result.label_name} "
        f"(threshold {result.threshold:.2f}), folds {result.fold_min:.2f}-{result.fold_max:.2f} "
        f"(sd {result.fold_spread:.3f}, n={len(result.fold_probs)}) "
        f"[{result.model_name} v{result.model_version or '?'}]"
    )


def to_json(results: Sequence[Prediction | ScanFailure], extra: dict[str, Any] | None = None) -> str:
    """A JSON document: ``{"results": [...], "n_ok": .., "n_failed": .., **extra}``."""
    n_ok = sum(r.ok for r in results)
    doc = {
        **(extra or {}),
        "n_ok": n_ok,
        "n_failed": len(results) - n_ok,
        "results": [r.to_dict() for r in results],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_csv(results: Sequence[Prediction | ScanFailure], info: ModelInfo | None = None) -> str:
    """One CSV row per scan (fold probabilities joined with ``;``; empty cells for failures).

    With the model's ``info``, each row also names how its threshold was chosen and the
    out-of-fold sensitivity/specificity expected at it.
    """
    op = (info.operating_point if info is not None else None) or {}
    expected = {
        "threshold_method": op.get("method", ""),
        "expected_sensitivity": (op.get("sensitivity") or {}).get("value", ""),
        "expected_specificity": (op.get("specificity") or {}).get("value", ""),
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        if isinstance(r, ScanFailure):
            writer.writerow({"source": r.source, "ok": 0, "error_type": r.error_type, "error": r.error})
            continue
        row: dict[str, Any] = {
            "source": r.source,
            "ok": 1,
            "probability": f"{r.probability:.6f}",
            "label": r.label,
            "label_name": r.label_name,
            "threshold": r.threshold,
            "fold_spread": f"{r.fold_spread:.6f}",
            "fold_min": f"{r.fold_min:.6f}",
            "fold_max": f"{r.fold_max:.6f}",
            "fold_probs": ";".join(f"{p:.6f}" for p in r.fold_probs),
            "model_name": r.model_name,
            "model_version": r.model_version,
            **expected,
            **provenance_cells(r),
        }
        row.update({f"time_{k}": f"{v:.4f}" for k, v in r.timings.items() if f"time_{k}" in CSV_COLUMNS})
        writer.writerow(row)
    return buf.getvalue()


def provenance_cells(r: Prediction) -> dict[str, Any]:
    """The :data:`PROVENANCE_COLUMNS` of one prediction (empty cells for what does not apply)."""
    facts = r.suv.get("facts") or {}

    def value(name: str) -> Any:
        return (facts.get(name) or {}).get("value", "")

    def source(name: str) -> str:
        f = facts.get(name)
        return f"{f['source']}: {f['detail']}" if f else ""

    cells: dict[str, Any] = {
        "input_sha256": r.scan.get("sha256", ""),
        "input_bytes": r.scan.get("bytes", ""),
        "sidecar_sha256": r.scan.get("sidecar_sha256", ""),
        "series_uid": r.scan.get("series_uid", ""),
        "suv_units": r.suv.get("units", ""),
        "units_original": value("units"),
        "decay_factor": value("decay_factor"),
        "suv_factor": value("suv_factor"),
        "gliodeploy_version": r.provenance.get("gliodeploy_version", ""),
        "preprocessed_by": r.provenance.get("preprocessed_by", ""),
        "model_checksum": (r.provenance.get("model") or {}).get("checksum") or "",
    }
    for fact, name in _CSV_FACTS:
        cells[fact] = value(fact)
        cells[f"{name}_source"] = source(fact)
    return cells
