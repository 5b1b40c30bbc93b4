"""What training added to a model that starts from a built-in prior (issue #11): trained vs untrained.

    .venv/bin/python bench/bench_prior.py RUN... --manifest COHORT/manifest.csv --name NAME

LesionNet's learned evidence starts at exactly zero, so the untrained model already scores its
left-right asymmetry prior. For each RUN this runs ``gliodeploy evaluate`` (no Grad-CAM) and tabulates,
on the same patients: the trained folds' out-of-fold and external AUC, the untrained model's, their
paired bootstrap difference, and the TBRmax baseline beside them. Writes
``bench/results/learning_prior_NAME.{json,md}`` (rendered into BENCHMARKS.md's "Learning" part).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, BenchResult, Stamp, Table, tmpdir  # noqa: E402

GLIODEPLOY = Path(sys.executable).parent / "gliodeploy"


def _auc(split: dict[str, Any] | None) -> str:
    if not split:
        return "n/a"
    roc = next(iter(split["thresholds"].values()))["metrics"]["roc_auc"]  # AUC: the same at any threshold
    return f"{roc['value']:.3f} [{roc['low']:.3f}-{roc['high']:.3f}]"


def _delta(c: dict[str, Any] | None) -> str:
    if not c:
        return "n/a"
    from gliodeploy.evaluation.metrics import Estimate

    return Estimate(**c["delta"]).format_signed()


def model_options(model: dict[str, Any]) -> str:
    """``lesionnet (asymmetry_peak_smoothing_mm=0.0)``: the architecture and its non-default options."""
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted((model.get("kwargs") or {}).items()))
    return f"{model['name']} ({kwargs})" if kwargs else f"{model['name']} (defaults)"


def verdict(run: str, oof: dict[str, Any]) -> str:
    """One line: what training did to the out-of-fold AUC, from the paired difference's CI."""
    d = oof["delta"]
    if d["low"] > 0:
        what = "added discrimination to"
    elif d["high"] < 0:
        what = "lowered the discrimination below"
    else:
        what = "added no measurable discrimination to"
    return f"{run}: training {what} the untrained prior out of fold ({_delta(oof)})."


def evaluate(run: Path, manifest: Path, bootstrap: int) -> dict[str, Any]:
    """``gliodeploy evaluate RUN`` into a temporary folder; returns its metrics.json."""
    with tmpdir("prior") as tmp:
        cmd = [str(GLIODEPLOY), "evaluate", str(run), "--manifest", str(manifest), "--out", tmp]
        cmd += ["--no-localisation", "--bootstrap", str(bootstrap)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"gliodeploy evaluate {run} failed:\n{proc.stderr[-2000:]}")
        return json.loads((Path(tmp) / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    """Evaluate every run, write the results; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="finished run directories (one cohort)")
    ap.add_argument("--manifest", type=Path, required=True, help="the cohort the runs were trained on")
    ap.add_argument("--name", required=True, help="result name: bench/results/learning_prior_NAME")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)

    stamp = Stamp.start()
    table = Table(
        f"Trained vs untrained (built-in prior only), same patients; cohort `{args.manifest}`",
        [
            "run",
            "model options",
            "epochs",
            "OOF AUC trained",
            "OOF untrained",
            "trained - untrained",
            "external AUC trained",
            "external untrained",
            "trained - untrained ",
            "TBRmax baseline OOF / external",
            "CNN - baseline, external",
        ],
    )
    verdicts, raw = [], {}
    for run in args.runs:
        metrics = evaluate(run, args.manifest, args.bootstrap)
        entry = metrics["runs"][0]
        plans = json.loads((run / "plans.json").read_text(encoding="utf-8"))
        prior = entry.get("built_in_prior")
        if prior is None:
            verdicts.append(f"{run}: its model has no built-in prior (starts from random weights); skipped.")
            continue
        base = metrics.get("baseline") or {}
        val, test = prior["validation"], prior.get("test")
        table.add(
            f"`{run}`",
            model_options(plans["model"]),
            plans["training"]["epochs"],
            _auc(entry["validation"]),
            f"{val['auc_b']:.3f}",
            _delta(val),
            _auc(entry.get("test")),
            f"{test['auc_b']:.3f}" if test else "n/a",
            _delta(test),
            f"{_auc(base.get('validation')).split(' ')[0]} / {_auc(base.get('test')).split(' ')[0]}",
            _delta(entry.get("test_auc_vs_baseline")),
        )
        verdicts.append(verdict(str(run), val))
        raw[str(run)] = {
            "built_in_prior": prior,
            "validation": entry["validation"]["thresholds"]["0.5"]["metrics"]["roc_auc"],
            "test": entry["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"] if entry.get("test") else None,
            "test_auc_vs_baseline": entry.get("test_auc_vs_baseline"),
            "baseline": {k: base.get(k) for k in ("validation", "test")},
            "epochs": plans["training"]["epochs"],
            "model": plans["model"],
        }
    table.notes.append(
        "differences are paired bootstrap 95 % CIs on the same patients; untrained = the run's architecture "
        "freshly built (its learned evidence is zero, so it scores the asymmetry prior alone)"
    )
    result = BenchResult(f"learning_prior_{args.name}", "What training added to the built-in prior", [table])
    result.verdicts, result.raw = verdicts, raw
    command = " ".join([".venv/bin/python bench/bench_prior.py", *(argv or sys.argv[1:])])
    from run_benchmarks import save_result

    print(save_result(stamp.document(result, command=command, quick=False), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
