"""BENCHMARKS.md rendering of bench_learning.py results: the learning-curve summary and section order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import run_benchmarks  # noqa: E402


def _est(value: float, width: float = 0.05) -> dict[str, float]:
    return {"value": value, "low": value - width, "high": value + width}


def _learning(path: Path, runs: list[tuple[str, int, float, float]], generator: str) -> None:
    doc = {
        "raw": {
            "cohort": {
                "manifest": "/tmp/x/manifest.csv",
                "summary": {"generator": {"Description": generator}},
            },
            "runs": [
                {
                    "variant": v,
                    "n_train": n,
                    "oof": {
                        "oof_auc": _est(auc),
                        "tbr_max_auc": _est(ceiling),
                        "auc_minus_tbr": _est(auc - ceiling, 0.02),
                    },
                }
                for v, n, auc, ceiling in runs
            ],
        }
    }
    path.with_suffix(".json").write_text(json.dumps(doc), encoding="utf-8")
    path.with_suffix(".md").write_text(f"## Learning\n\n{path.stem} body\n", encoding="utf-8")


def test_learning_curve_summary_groups_by_cohort_and_orders_sections(tmp_path: Path) -> None:
    _learning(tmp_path / "learning_probe_a", [("lesionnet", 100, 0.70, 0.80)], "n=120 seed=0")
    _learning(tmp_path / "learning_curve_lesionnet_n200", [("lesionnet", 200, 0.80, 0.86)], "n=500 seed=1")
    _learning(
        tmp_path / "learning_variants_n100",
        [("lesionnet", 100, 0.78, 0.83), ("cnn3d_reduced", 100, 0.51, 0.83)],
        "n=500 seed=1",
    )
    # bench_prior.py: its raw numbers are keyed by run, with no learning-curve points
    (tmp_path / "learning_prior_x.json").write_text(json.dumps({"raw": {"/runs/a": {}}}), encoding="utf-8")
    (tmp_path / "learning_prior_x.md").write_text("## What training added\n\nbody\n", encoding="utf-8")
    text = run_benchmarks.render(tmp_path)
    summary = run_benchmarks.learning_curve_summary(tmp_path)
    assert summary in text
    # one table per cohort, rows sorted by variant then size, each naming its source section
    assert summary.count("| variant | n train |") == 2
    rows = [line for line in summary.splitlines() if line.startswith("| lesionnet |")]
    assert rows[0].startswith("| lesionnet | 100 | 0.780 [0.730-0.830] | 0.830 | -0.050")
    assert rows[1].startswith("| lesionnet | 200 | 0.800") and rows[1].endswith(
        "| learning_curve_lesionnet_n200 |"
    )
    assert "| cnn3d_reduced | 100 | 0.510" in summary
    # variants, then what training added to the prior, then the curve, then the probes
    sections = ("variants_n100", "prior_x", "curve_lesionnet_n200", "probe_a")
    order = [text.index(f"### learning_{s}") for s in sections]
    assert order == sorted(order)
    assert "\n## Learning\n" not in text  # a result's own title never competes with the page's sections
