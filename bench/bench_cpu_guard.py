"""The CPU engines' ``auto`` guard on TRAINED weights: a finished, evaluated run (by default the demo's,
``/work/demo_output/run``; ``GLIODEPLOY_BENCH_RUN`` names another) exported with ``cpu_engine = "auto"``,
``cpu_precision = "auto"`` (int8 calibrated on its training scans), then every engine x precision on
the run's external (``split == test``) scans: probability differences, decision flips and AUC against
the float32 graph, and what ``auto`` keeps on the version's reference cases.

    .venv/bin/python bench/run_benchmarks.py --only cpu_guard
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from common import BenchResult, Table, fmt, stats_ms, tmpdir

NAME = "cpu_guard"
DEFAULT_RUN = Path("/work/demo_output/run")


def run(quick: bool) -> BenchResult:
    """Export the run, score its external scans with every available engine/precision."""
    from sklearn.metrics import roc_auc_score

    from gliodeploy import contract
    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.export.pipeline import export_run
    from gliodeploy.export.profiles import ExportProfile
    from gliodeploy.export.reference import load_reference_cases
    from gliodeploy.preprocessing import PreprocessConfig
    from gliodeploy.runtime import engines
    from gliodeploy.runtime.engines import REFERENCE, create_engine, expand, resolve_version, unavailable
    from gliodeploy.runtime.engines import guard as guard_fn
    from gliodeploy.training.rundir import RunDir

    run_dir = Path(os.environ.get("GLIODEPLOY_BENCH_RUN", DEFAULT_RUN))
    plans = RunDir(run_dir).plans()
    cfg = PreprocessConfig.from_dict(plans["preprocessing"])
    rows = [r for r in read_manifest(plans["manifest"], require_train=False).rows if r.split == "test"]
    rows = rows[:8] if quick else rows
    result = BenchResult(
        NAME, f"CPU engines on trained weights: the auto guard and the external AUC ({run_dir})"
    )
    raw = result.raw
    with tmpdir("guard") as tmp:
        profile = ExportProfile(name="cpu", cpu_engine="auto", cpu_precision="auto")
        exported = export_run(run_dir, Path(tmp) / "repo", profile=profile)
        version_dir = exported.repository / contract.ENSEMBLE_MODEL / str(exported.version)
        threshold = exported.operating_point["threshold"]
        entries = build_cache(rows, cfg, Path(tmp) / "cache", progress=False)  # never the run's own cache
        x = np.stack([load_cached(entries[r.subject]).array for r in rows])[:, None].astype(np.float32)
        labels = np.array([r.label for r in rows])
        cases = load_reference_cases(version_dir)
        _, decision = resolve_version(version_dir, "auto", "auto")
        raw["auto"] = decision.to_dict() if decision else None
        guard = {str(c.choice): c for c in decision.candidates} if decision else {}
        table = Table(
            f"{plans['model']['name']} {plans['folds']}-fold ensemble at {'x'.join(map(str, cfg.shape))}, "
            f"{len(rows)} external scans, threshold {threshold:.4f}",
            [
                "engine/precision",
                "p50 ms/scan",
                "max abs prob diff",
                "decision flips",
                "AUC",
                "AUC change",
                "guard on reference cases (max diff)",
                "auto",
            ],
        )
        model = version_dir / "model.onnx"
        ref = auc_ref = None
        for choice in [REFERENCE, *[c for c in expand("auto", "auto") if c != REFERENCE]]:
            why = unavailable(choice, model)
            if why:
                table.add(str(choice), "-", "-", "-", "-", "-", "-", why)
                continue
            eng = create_engine(model, choice)
            eng.run(x[:1])
            times, probs = [], []
            for v in x:
                t0 = _now()
                probs.append(float(eng.probabilities(v[None])[0]))
                times.append(_now() - t0)
            p = np.array(probs)
            if ref is None:
                ref, auc_ref = p, float(roc_auc_score(labels, p))
            auc = float(roc_auc_score(labels, p))
            flips = int(np.sum((p >= threshold) != (ref >= threshold)))
            diff = float(np.max(np.abs(p - ref)))
            s = stats_ms(times)
            c = guard.get(str(choice))
            verdict = "-" if c is None else ("kept" if c.choice == decision.choice else c.reason)
            ref_flips, ref_diff, ref_why = guard_fn(
                eng.probabilities(cases.inputs()), cases.probability, threshold
            )
            own = f"{'passes' if ref_why is None else 'fails'} ({ref_diff:.2g})"
            raw.setdefault("rows", []).append(
                {
                    "choice": str(choice),
                    **s,
                    "max_abs_diff": diff,
                    "flips": flips,
                    "auc": auc,
                    "reference_flips": ref_flips,
                    "reference_max_abs_diff": ref_diff,
                    "guard": ref_why or "passes",
                    "auto": verdict,
                }
            )
            table.add(
                str(choice),
                fmt(s["p50_ms"]),
                f"{diff:.2g}",
                flips,
                f"{auc:.4f}",
                f"{auc - auc_ref:+.4f}",
                own,
                verdict,
            )
            print(f"  {choice}: auc {auc:.4f}, max diff {diff:.2g}, flips {flips}", flush=True)
        table.notes += [
            f"auto's guard: no decision flip on the version's reference cases and max |P - P(float32)| <= "
            f"{engines.PROBABILITY_TOLERANCE} (gliodeploy.runtime.engines.PROBABILITY_TOLERANCE); reference "
            "probabilities are PyTorch's.",
            f"int8 calibrated by gliodeploy export on {profile.int8_calibration_scans} training scans of "
            "the run.",
        ]
        result.tables.append(table)
    if decision is not None:
        chosen = next((r for r in raw.get("rows", []) if r["choice"] == str(decision.choice)), None)
        result.verdicts.append(f"auto kept {decision.reason}.")
        if chosen:
            result.verdicts.append(
                f"{decision.choice} on {len(rows)} external scans: {chosen['flips']} decision flip(s), "
                f"AUC change {chosen['auc'] - auc_ref:+.4f} (target |change| <= 0.005: "
                f"{'met' if abs(chosen['auc'] - auc_ref) <= 0.005 else 'not met'})."
            )
    return result


def _now() -> float:
    import time

    return time.perf_counter()
