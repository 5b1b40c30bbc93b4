"""The evaluation report: ``metrics.json`` (all numbers), ``report.md`` and a self-contained
``report.html`` (figures embedded as base64 PNG; opens offline in any browser).

Every number shown in the HTML tables carries ``data-*`` attributes (model, split, threshold,
metric) so that tests - and readers' scripts - can match it to ``metrics.json``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gliodeploy import __version__
from gliodeploy.evaluation import figures as F
from gliodeploy.evaluation.baseline import describe_lesion_location
from gliodeploy.evaluation.evaluate import (
    BootstrapSettings,
    compare_auc,
    comparison_table,
    evaluate_baseline,
    evaluate_run,
    prior_sentence,
    selection_bias,
)
from gliodeploy.evaluation.metrics import METRIC_NAMES, Estimate
from gliodeploy.evaluation.operating_point import OperatingPoint, describe
from gliodeploy.evaluation.rundata import Predictions, RunData
from gliodeploy.explain.localisation import localisation_sentence
from gliodeploy.utils.atomic import atomic_write

#: How each validation mode's OOF figures were obtained, in the report's words.
VALIDATION_TEXT = {
    "final": "final epoch of a fixed schedule; the validation fold never chose anything (unbiased OOF)",
    "inner": "early stopping on an inner split of the training folds; validation fold unseen (unbiased OOF)",
    "study": "best epoch on the validation fold itself - model selected on these patients (optimistic)",
}

#: Section ids of the HTML report, in order (tests check every one is present).
SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "validation-metrics": "Validation (out-of-fold) metrics",
    "test-metrics": "External test metrics",
    "baseline": "TBR baseline vs CNN ensemble",
    "roc-pr": "ROC and precision-recall curves",
    "calibration": "Calibration",
    "confusion": "Confusion matrices",
    "fold-spread": "Per-fold test metrics",
    "training-curves": "Training and validation loss",
    "suspect-labels": "Per-patient validation loss and suspect labels",
    "class-distribution": "Class distribution per site and scanner",
}
METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "average_precision": "AP",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced acc.",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
}


@dataclass
class ReportInputs:
    """Everything a report is made of; ``test`` and baseline entries may be absent."""

    runs: list[RunData]
    test: dict[str, Predictions | None] = field(default_factory=dict)  # by run name
    baseline_train: Predictions | None = None
    baseline_test: Predictions | None = None
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # subject -> parameters
    # settings, lesion_sources, hotspot_miss (gliodeploy.evaluation.inference.baseline_summary)
    baseline_summary: dict[str, Any] = field(default_factory=dict)
    distribution: list[tuple[str, str, str, int]] = field(default_factory=list)  # split, site, scanner, label
    manifest: str | None = None
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)  # by run name
    # by run name: Grad-CAM localisation over the test recurrences (gliodeploy.explain.cohort)
    localisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # by run name: (description, OOF, test) scores of the untrained model when it has a built-in prior
    prior: dict[str, tuple[str, Predictions, Predictions | None]] = field(default_factory=dict)


def run_validation_mode(plans: dict[str, Any]) -> str:
    """``training.validation`` of a run from its plans (runs from before the modes: ``"study"``)."""
    v = plans.get("validation")
    return str(v.get("mode", "study")) if isinstance(v, dict) else "study"


def compute_metrics(inputs: ReportInputs, boot: BootstrapSettings) -> dict[str, Any]:
    """All numbers of the report, as written to metrics.json."""
    runs = [
        evaluate_run(
            r.name,
            r.oof,
            inputs.test.get(r.name),
            boot,
            operating_point=inputs.operating_points.get(r.name),
            validation_mode=run_validation_mode(r.plans),
            localisation=inputs.localisation.get(r.name),
            prior=inputs.prior.get(r.name),
        )
        for r in inputs.runs
    ]
    for entry, run in zip(runs, inputs.runs, strict=True):
        entry["path"] = str(run.path)
        entry["model"] = run.plans.get("model", {})
        entry["suspect_labels"] = sorted(run.suspects)
        entry["selection_bias"] = selection_bias(run)
    baseline = None
    if inputs.baseline_train is not None:
        baseline = evaluate_baseline(inputs.baseline_train, inputs.baseline_test, boot)
        baseline.update(inputs.baseline_summary)
        for entry, run in zip(runs, inputs.runs, strict=True):
            test = inputs.test.get(run.name)
            if test is not None and inputs.baseline_test is not None:
                entry["test_auc_vs_baseline"] = compare_auc(test, inputs.baseline_test, boot)
    pairwise = []  # every pair of runs on the shared test patients (paired bootstrap AUC test)
    for i, a in enumerate(inputs.runs):
        for b in inputs.runs[i + 1 :]:
            ta, tb = inputs.test.get(a.name), inputs.test.get(b.name)
            if ta is not None and tb is not None:
                pairwise.append({"a": a.name, "b": b.name, **compare_auc(ta, tb, boot)})
    return {
        "gliodeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest": inputs.manifest,
        "bootstrap": boot.to_dict(),
        "runs": runs,
        "baseline": baseline,
        "test_auc_pairwise": pairwise,
        "baseline_parameters": inputs.baseline_params,
        "table": comparison_table(runs, baseline),
    }


# --- rendering ---------------------------------------------------------------------------------


def _fmt(d: dict[str, float]) -> str:
    e = Estimate(d["value"], d["low"], d["high"])
    return "n/a" if math.isnan(e.value) else e.format(3)


def _table_html(rows: list[dict[str, Any]], split: str) -> str:
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        return "<p>No predictions for this split.</p>"
    head = "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRIC_NAMES)
    out = [f"<table><thead><tr><th>Model</th><th>n</th><th>Threshold</th>{head}</tr></thead><tbody>"]
    for r in rows:
        attrs = (
            f'data-model="{html.escape(r["model"])}" data-split="{split}" '
            f'data-threshold="{html.escape(r["threshold_name"])}"'
        )
        cells = "".join(
            f'<td {attrs} data-metric="{m}" data-value="{r["metrics"][m]["value"]!r}">'
            f"{_fmt(r['metrics'][m])}</td>"
            for m in METRIC_NAMES
        )
        out.append(
            f"<tr><td>{html.escape(r['model'])}</td><td>{r['n']}</td>"
            f"<td>{html.escape(r['threshold_name'])} ({r['threshold']:.3g})</td>{cells}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _table_md(rows: list[dict[str, Any]], split: str) -> str:
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        return "No predictions for this split.\n"
    lines = [
        "| Model | n | Threshold | " + " | ".join(METRIC_LABELS[m] for m in METRIC_NAMES) + " |",
        "|---" * (3 + len(METRIC_NAMES)) + "|",
    ]
    for r in rows:
        cells = " | ".join(_fmt(r["metrics"][m]) for m in METRIC_NAMES)
        lines.append(f"| {r['model']} | {r['n']} | {r['threshold_name']} ({r['threshold']:.3g}) | {cells} |")
    return "\n".join(lines) + "\n"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
table{border-collapse:collapse;margin:0.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f0f0f0}section{margin-bottom:2em}img{max-width:100%;border:1px solid #eee;margin:4px}
.note{color:#555;font-size:13px}code{background:#f5f5f5;padding:0 3px}
.warn{color:#8a4b00;background:#fff4e0;padding:4px 8px}
"""


def _selection_bias_text(sb: dict[str, Any]) -> str:
    return (
        f"Had each fold's epoch been chosen on its own validation patients (the 2024 study's rule), this run "
        f"would have reported an OOF AUC of {sb['oof_auc_if_selected_on_validation_fold']:.3f} instead of "
        f"{sb['oof_auc_final_epoch']:.3f} (selection optimism {sb['optimism']:+.3f})."
    )


def _selection_bias_html(sb: dict[str, Any] | None) -> str:
    if not sb:
        return ""
    text = html.escape(_selection_bias_text(sb))
    return f"<br><span data-selection-bias='{sb['optimism']:.4f}'>{text}</span>"


def render(metrics: dict[str, Any], inputs: ReportInputs, *, curve_resamples: int = 200) -> tuple[str, str]:
    """The HTML and Markdown reports for computed ``metrics``."""
    runs, baseline, table = metrics["runs"], metrics["baseline"], metrics["table"]
    body: dict[str, str] = {}
    md: list[str] = ["# gliodeploy evaluation report", ""]

    boot = metrics["bootstrap"]
    summary = [
        f"<p>gliodeploy {html.escape(metrics['gliodeploy_version'])}, {html.escape(metrics['created'])}. "
        f"Manifest: <code>{html.escape(str(metrics['manifest']))}</code>.</p>",
        f"<p class='note'>95 % CIs: {html.escape(boot['method'])}, {boot['n_resamples']} resamples, seed "
        f"{boot['seed']}. Validation = out-of-fold predictions of cross-validation; "
        "test = fold-ensemble mean probability on the held-out split. "
        "Operating points are chosen on OOF (CNN) or the training split "
        "(baseline) only and applied unchanged to the test set.</p><ul>",
    ]
    for r in runs:
        mode = r["validation_mode"]
        mode_text = VALIDATION_TEXT.get(mode, mode)
        op = r.get("operating_point")
        op_text = describe(op) if op else f"no operating point; Youden threshold {r['youden_threshold']:.3f}"
        summary.append(
            f"<li data-run='{html.escape(r['name'])}' data-validation='{html.escape(mode)}'>"
            f"<b>{html.escape(r['name'])}</b> ({html.escape(str(r['model'].get('name', '?')))}, "
            f"<code>{html.escape(r['path'])}</code>)<br>Validation: {html.escape(mode_text)}"
            f"<br>Operating point: {html.escape(op_text)}"
            + (
                f"<br><span data-localisation='{html.escape(r['name'])}'>"
                f"{html.escape(localisation_sentence(r['localisation']))}</span>"
                if r.get("localisation")
                else ""
            )
            + (
                f"<br><span data-prior='{html.escape(r['name'])}'>Trained "
                f"{html.escape(prior_sentence(r['built_in_prior']))}</span>"
                if r.get("built_in_prior")
                else ""
            )
            + _selection_bias_html(r.get("selection_bias"))
            + "".join(f"<br><b>&#9888; {html.escape(n)}</b>" for n in r.get("diagnosis", []))
            + "</li>"
        )
        md += [f"- {r['name']}: validation {mode_text}", f"  - operating point: {op_text}"]
        if r.get("localisation"):
            md += [f"  - {localisation_sentence(r['localisation'])}"]
        if r.get("built_in_prior"):
            md.append(f"  - Trained {prior_sentence(r['built_in_prior'])}")
        if r.get("selection_bias"):
            md.append(f"  - {_selection_bias_text(r['selection_bias'])}")
        md += [f"  - **{n}**" for n in r.get("diagnosis", [])]
    summary.append("</ul>")
    body["summary"] = "".join(summary)
    md += [""]
    optimistic = [r["name"] for r in runs if r.get("optimistic")]
    if optimistic:
        body["validation-metrics"] = (
            "<p class='warn' data-optimistic='1'><b>Model selected on these patients (optimistic):</b> "
            f"{html.escape(', '.join(optimistic))} chose each fold's epoch on the validation fold itself.</p>"
        )

    body["validation-metrics"] = body.get("validation-metrics", "") + _table_html(table, "validation")
    body["test-metrics"] = _table_html(table, "test") + "".join(
        f"<p data-pair='{html.escape(c['a'])}|{html.escape(c['b'])}'>{html.escape(c['a'])} vs "
        f"{html.escape(c['b'])}: test AUC difference {Estimate(**c['delta']).format(3)}, paired bootstrap "
        f"p = {c['p_value']:.3f} (n = {c['n']}).</p>"
        for c in metrics["test_auc_pairwise"]
    )
    md += ["## Validation (out-of-fold)", ""]
    if optimistic:
        md += [f"**Model selected on these patients (optimistic):** {', '.join(optimistic)}", ""]
    md += [_table_md(table, "validation"), "## External test", ""]
    md += [_table_md(table, "test")]

    # Baseline side by side
    base_html: list[str] = []
    if baseline is None:
        base_html.append("<p>Baseline not computed (no manifest scans).</p>")
    else:
        base_html.append(
            "<p class='note'>TBRmax from the PET (automatic lesion candidate outside the whole striatum, "
            "or the reader's lesion point/VOI from the manifest; healthy-brain "
            "reference and striatum; see <code>gliodeploy.evaluation.baseline</code>). "
            "Its rows in the tables above are "
            f"named <b>{html.escape(baseline['name'])}</b>; 'validation' is the whole training split.</p>"
        )
        for key, sentence in describe_lesion_location(baseline):  # lesion sources, hotspot miss rate
            base_html.append(f"<p data-baseline='{key}'>{html.escape(sentence)}</p>")
            md.append(sentence)
        for r in runs:
            c = r.get("test_auc_vs_baseline")
            if c:
                base_html.append(
                    f"<p data-comparison='{html.escape(r['name'])}'>{html.escape(r['name'])} vs baseline, "
                    "test AUC "
                    f"difference {Estimate(**c['delta']).format(3)}, paired bootstrap p = {c['p_value']:.3f} "
                    f"(n = {c['n']}).</p>"
                )
                md.append(
                    f"{r['name']} vs baseline (test): AUC difference {Estimate(**c['delta']).format(3)}, "
                    f"p = {c['p_value']:.3f}"
                )
        cutoffs = {k: v["threshold"] for k, v in baseline["validation"]["thresholds"].items()}
        for split, pred in (("training split", inputs.baseline_train), ("test", inputs.baseline_test)):
            if pred is not None:
                base_html.append(
                    _img(F.baseline_scatter_figure(pred, cutoffs, f"TBRmax, {split}"), f"TBR {split}")
                )
    body["baseline"] = "".join(base_html)

    # Curves
    curves_html = []
    val_curves = [(r.name, r.oof) for r in inputs.runs]
    if inputs.baseline_train is not None:
        val_curves.append(("TBRmax baseline (train split)", inputs.baseline_train))
    curves_html.append(
        _img(F.roc_pr_figure(val_curves, "validation", n_resamples=curve_resamples), "ROC validation")
    )
    test_curves = [(name, p) for name, p in inputs.test.items() if p is not None]
    if test_curves and inputs.baseline_test is not None:
        test_curves.append(("TBRmax baseline", inputs.baseline_test))
    if test_curves:
        curves_html.append(
            _img(F.roc_pr_figure(test_curves, "external test", n_resamples=curve_resamples), "ROC test")
        )
    body["roc-pr"] = "".join(curves_html)

    cal = [(f"{r.name} OOF", r.oof) for r in inputs.runs]
    cal += [(f"{n} test", p) for n, p in inputs.test.items() if p is not None]
    cal = [(n, p) for n, p in cal if p.scores.min() >= 0 and p.scores.max() <= 1]
    body["calibration"] = _img(F.calibration_figure(cal), "calibration") + "".join(
        f"<p>{html.escape(r['name'])}: ECE (OOF) {r['validation']['ece']:.3f}, after temperature scaling "
        f"{r['validation']['ece_temperature_scaled']:.3f}</p>"
        for r in runs
    )

    blocks = []
    for entry in [*runs, *([baseline] if baseline else [])]:
        for split in ("validation", "test"):
            if entry.get(split):
                for label, b in entry[split]["thresholds"].items():
                    blocks.append((f"{entry['name']}\n{split}, threshold {label}", b["confusion"]))
    body["confusion"] = _img(F.confusion_figure(blocks), "confusion matrices")

    spread_html = []
    for r in runs:
        folds = (r.get("test") or {}).get("folds")
        if not folds:
            continue
        head = "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRIC_NAMES)
        rows = "".join(
            f"<tr><td>fold {f['fold']}</td>" + "".join(f"<td>{f[m]:.3f}</td>" for m in METRIC_NAMES) + "</tr>"
            for f in folds["per_fold"]
        )
        sd = "".join(
            f"<td>{folds['spread'][m]['mean']:.3f} &plusmn; {folds['spread'][m]['sd']:.3f}</td>"
            for m in METRIC_NAMES
        )
        spread_html.append(
            f"<h3>{html.escape(r['name'])}</h3>"
            f"<table><thead><tr><th>Fold (threshold 0.5)</th>{head}</tr></thead>"
            f"<tbody>{rows}<tr><th>mean &plusmn; SD</th>{sd}</tr></tbody></table>"
        )
    body["fold-spread"] = "".join(spread_html) or "<p>No test predictions.</p>"

    body["training-curves"] = "".join(
        f"<h3>{html.escape(r.name)}</h3>" + _img(F.loss_curves_figure(r.fold_logs), f"loss curves {r.name}")
        for r in inputs.runs
    )
    sus = []
    for r in inputs.runs:
        names = ", ".join(sorted(r.suspects)) or "none"
        sus.append(
            f"<h3>{html.escape(r.name)}</h3><p>Suspect labels ({len(r.suspects)}): {html.escape(names)}</p>"
            + _img(F.patient_loss_figure(r.fold_logs, r.suspects), f"patient losses {r.name}")
        )
        md.append(f"Suspect labels in {r.name}: {names}")
    body["suspect-labels"] = "".join(sus)
    dist = inputs.distribution or [
        ("train", s, sc, int(y))
        for r in inputs.runs[:1]
        for s, sc, y in zip(r.oof.sites, r.oof.scanners, r.oof.labels, strict=False)
    ]
    body["class-distribution"] = _img(F.class_distribution_figure(dist), "class distribution")

    nav = " | ".join(f'<a href="#{k}">{html.escape(v)}</a>' for k, v in SECTIONS.items())
    sections = "".join(
        f'<section id="{k}"><h2>{html.escape(title)}</h2>{body[k]}</section>' for k, title in SECTIONS.items()
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gliodeploy evaluation</title>"
        f"<style>{_CSS}</style></head><body><h1>gliodeploy evaluation report</h1><nav>{nav}</nav>{sections}"
        "<p class='note'>Research software; not for clinical decisions.</p></body></html>"
    )
    return page, "\n".join(md) + "\n"


def write_report(
    inputs: ReportInputs, out_dir: str | Path, boot: BootstrapSettings, *, curve_resamples: int = 200
) -> dict[str, Path]:
    """Compute, render and atomically write metrics.json, report.md and report.html into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(inputs, boot)
    page, md = render(metrics, inputs, curve_resamples=curve_resamples)
    paths = {
        "metrics": atomic_write(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True) + "\n"),
        "markdown": atomic_write(out / "report.md", md),
        "html": atomic_write(out / "report.html", page),
    }
    return paths
