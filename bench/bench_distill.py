"""Distil a trained fold ensemble into one network (issue #12, item 6), measured before it stays.

    .venv/bin/python bench/bench_distill.py demo_output/run [--width 0.5] [--epochs 24]

Runs ``gliodeploy distill`` (gliodeploy/training/distill.py) on RUN: the student is the run's own
architecture at a reduced width (a tenth of the ensemble's FLOPs or less), trained on the run's
training subjects to reproduce the ensemble's probability (soft targets:
BCE against the teacher's mean probability; with ``--hard-weight`` a share of the recorded labels),
with the run's augmentation. It never sees the external scans. Measured on the run's external test
split: AUC of the student and of the ensemble with a paired bootstrap, max |delta p|, decisions at the
run's operating point, FLOPs and ONNX Runtime latency (batch 1) on this CPU. The verdict applies the
issue's rule: keep distillation as an export option only if the student's AUC is within 0.02 of the
ensemble's. Writes ``bench/results/distill.{json,md}`` (rendered into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    BenchResult,
    Stamp,
    Table,
    export_ensemble_onnx,
    fmt,
    random_suv,
    stats_ms,
    time_calls,
    tmpdir,
)


def flops(model: Any, shape: tuple[int, int, int]) -> int:
    """Forward FLOPs of ``model`` at batch 1 (torch's FlopCounterMode: convolutions and matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros((1, 1, *shape)))
    return int(counter.get_total_flops())


def onnx_latency(models: list[Any], shape: tuple[int, int, int], repeats: int) -> dict[str, float]:
    """ONNX Runtime batch-1 latency of the ensemble graph of ``models`` on this CPU."""
    import onnxruntime as ort

    with tmpdir("distill") as tmp:
        path = export_ensemble_onnx(models, shape, Path(tmp) / "m.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = random_suv(shape)
        return stats_ms(time_calls(lambda: sess.run(None, {"suv": x}), repeats, warmup=2))


def main(argv: list[str] | None = None) -> int:
    """Distil, evaluate, write the results; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory (e.g. demo_output/run)")
    ap.add_argument("--manifest", type=Path, help="default: the manifest recorded in plans.json")
    ap.add_argument("--width", type=float, default=0.5, help="student width factor (run's model = 1.0)")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hard-weight", type=float, default=0.0, help="share of the loss on the recorded labels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20, help="timed ONNX Runtime runs per model")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for distill.json / distill.md")
    args = ap.parse_args(argv)

    from gliodeploy.models.registry import count_parameters
    from gliodeploy.training.distill import MAX_AUC_LOSS, DistillSettings, distill_run, load_distilled
    from gliodeploy.training.rundir import RunDir

    stamp = Stamp.start()
    run = RunDir(args.run)
    plans = run.plans()
    shape = tuple(run.preprocessing().shape)
    settings = DistillSettings(
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hard_weight=args.hard_weight,
        seed=args.seed,
    )
    # `gliodeploy distill` itself: the student in RUN/distilled/ is the one measured here.
    record = distill_run(run.path, settings, manifest=args.manifest, force=True)
    student, _ = load_distilled(run.path)
    teacher = run.load_fold_models()
    info = record.info
    c = record.comparison
    if not c or c.get("auc_student") is None:
        raise SystemExit("the run's manifest has no labelled test split: nothing to compare the student on")
    y_n, threshold, agree = c["n"], c["threshold"], c["decision_agreement"]
    train_s, losses = info["train_seconds"], info["losses"]
    keep = record.deployable()[0]
    auc_s, auc_e = c["auc_student"], c["auc_ensemble"]
    d = c["difference"]
    f_teacher = sum(flops(m, shape) for m in teacher)
    f_student = flops(student, shape)
    lat_teacher = onnx_latency(teacher, shape, args.repeats)
    lat_student = onnx_latency([student], shape, args.repeats)
    y_pos = c.get("n_positive")

    table = Table(
        f"Distilled student vs the {len(teacher)}-fold ensemble of `{args.run}` on {y_n} external scans "
        f"({y_pos} recurrences), grid {'x'.join(map(str, shape))}",
        ["model", "parameters", "GFLOP / scan", "ORT p50 ms (batch 1)", "external AUC"],
    )
    name = plans["model"]["name"]
    table.add(
        f"ensemble ({name} x {len(teacher)})",
        f"{sum(count_parameters(m) for m in teacher):,}",
        fmt(f_teacher / 1e9, 3),
        fmt(lat_teacher["p50_ms"], 1),
        f"{auc_e:.3f}",
    )
    table.add(
        f"student ({name}, width {args.width:g})",
        f"{count_parameters(student):,}",
        fmt(f_student / 1e9, 3),
        fmt(lat_student["p50_ms"], 1),
        f"{auc_s:.3f}",
    )
    table.notes += [
        f"student - ensemble AUC {d['value']:+.3f} [95 % CI {d['low']:+.3f}, {d['high']:+.3f}] "
        f"(paired bootstrap, 2000), p = {d['p']:.3f}",
        f"max |delta p| {c['max_abs_delta']:.3f}; decisions at the operating point {threshold:.3f} agree on "
        f"{agree:.0%} of the external scans",
        f"student FLOPs = {f_student / f_teacher:.1%} of the ensemble's; `gliodeploy distill` trained "
        f"{args.epochs} epochs in {train_s:.0f} s on {info['n_train']} training subjects (soft targets, "
        f"hard-label weight {args.hard_weight:g}); final training loss {losses[-1]:.4f}",
    ]
    verdict = f"Student AUC {auc_s:.3f} vs ensemble {auc_e:.3f} (rule: within {MAX_AUC_LOSS}): " + (
        "kept as an export option (`gliodeploy distill RUN`, then `gliodeploy export RUN --distilled`)."
        if keep
        else "NOT within the rule: `gliodeploy export --distilled` refuses this student."
    )
    result = BenchResult("distill", "Distillation of the fold ensemble into one network", [table], [verdict])
    result.raw = {
        "run": str(args.run),
        "settings": info["settings"],
        "comparison": c,
        "flops": {"ensemble": f_teacher, "student": f_student},
        "latency": {"ensemble": lat_teacher, "student": lat_student},
        "losses": losses,
        "keep": keep,
    }
    command = " ".join([".venv/bin/python bench/bench_distill.py", *(argv or sys.argv[1:])])
    from run_benchmarks import save_result

    print(save_result(stamp.document(result, command=command, quick=False), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
