"""Offline ``gliodeploy predict`` throughput: reading overlapped with inference vs the model-bound rate.

On one exported repository and a set of scans, measures scans/s of: reading + preprocessing alone,
ONNX inference alone on pre-loaded inputs (the model-bound rate), a plain read-then-infer loop,
:meth:`OfflinePredictor.predict_many` (reading of the next scans overlapped with inference), and the
``gliodeploy predict`` command end to end (process start, verification, model load included).

    python bench/bench_predict.py REPOSITORY SCANS... [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from gliodeploy.predict.offline import OfflinePredictor
from gliodeploy.utils.atomic import atomic_write


def _infer_all(predictor: OfflinePredictor, grids: list[Any]) -> None:
    for grid in grids:
        predictor.infer(grid[None, None])


def measure(repo: Path, scans: list[Path], *, workers: int = 2, rounds: int = 2) -> dict[str, Any]:
    """Wall-clock scans/s of each way of predicting ``scans`` with ``repo`` (CPU).

    The in-process modes run in ``rounds`` interleaved rounds and keep each mode's best pass: on a
    shared machine the load changes during a run, and interleaving exposes every mode to it alike.
    """
    predictor = OfflinePredictor(repo, device="cpu")
    predictor.predict_file(scans[0])  # warm-up: first-run allocations of ONNX Runtime, readers' imports
    n = len(scans)
    passes: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        passes.setdefault(name, []).append(n / (time.perf_counter() - t))
        return out

    for _ in range(rounds):
        grids = timed("read + preprocess only", lambda: [predictor.prepare(s).array for s in scans])
        timed("model only (pre-loaded inputs)", partial(_infer_all, predictor, grids))
        del grids
        timed("read, then infer (no overlap)", lambda: [predictor.predict_file(s) for s in scans])
        results = timed(
            f"predict_many (overlapped, {workers} readers)",
            lambda: predictor.predict_many(scans, workers=workers),
        )
        if not all(r.ok for r in results):
            raise SystemExit(f"a scan failed: {next(r for r in results if not r.ok).error}")
    rates = {name: max(v) for name, v in passes.items()}

    out = Path(repo).parent / "predict_bench.csv"
    cmd = ["gliodeploy", "predict", str(repo), *map(str, scans), "--csv", "-q", "-j", str(workers)]
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", *cmd[1:], "-o", str(out)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"gliodeploy predict failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    rates["gliodeploy predict (CLI, end to end)"] = n / wall
    return {
        "scans": n,
        "workers": workers,
        "folds": predictor.info.folds,
        "grid": list(predictor.info.grid_shape),
        "providers": predictor.providers,
        "rates_scans_per_s": rates,
        "passes_scans_per_s": passes,
        "rounds": rounds,
        "cli_wall_s": wall,
        "cli_command": " ".join([*cmd[:2], "REPO", f"SCAN1 ... SCAN{n}", *cmd[3 + n :], "-o", "OUT.csv"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repository", type=Path)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    from gliodeploy.client.discovery import discover_scans

    row = measure(args.repository, discover_scans(args.paths), workers=args.workers)
    for name, rate in row["rates_scans_per_s"].items():
        print(f"{name:45s} {rate:6.2f} scans/s")
    if args.json_out:
        atomic_write(args.json_out, json.dumps(row, indent=2) + "\n")
    return 0


def run(quick: bool) -> object:
    """Suite entry: 16 synthetic full-size NIfTI scans, two exported ensembles (model-bound, read-bound)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import (
        FIXED_POINT,
        BenchResult,
        Table,
        fixed_fold_models,
        fmt,
        random_suv,
        synthetic_scans,
        tmpdir,
    )

    from gliodeploy.export.pipeline import export_models
    from gliodeploy.preprocessing import PreprocessConfig

    n_scans = 4 if quick else 16
    # (model, folds, grid config): one fold of the study's CNN3D on its grid (about as costly as reading a
    # scan) and the demo's 5-fold lesionnet on the 4 mm grid.
    setups = (
        [("lesionnet", 1, PreprocessConfig.demo())]
        if quick
        else [
            ("cnn3d", 1, PreprocessConfig.study()),
            ("lesionnet", 5, PreprocessConfig.demo()),
        ]
    )
    result = BenchResult("predict", f"Offline gliodeploy predict ({n_scans} synthetic full-size scans, CPU)")
    table = Table(
        "Scans/s (higher is better): best of 2 interleaved passes per in-process mode; the CLI runs once",
        [
            "ensemble",
            "grid",
            "read + preprocess only",
            "model only",
            "read then infer",
            "overlapped",
            "CLI end to end",
            "overlapped / min(read, model)",
        ],
    )
    with tmpdir("predict") as tmp:
        scans = synthetic_scans(Path(tmp) / "scans", n_scans)
        for name, folds, cfg in setups:
            shape = tuple(cfg.shape)
            repo = Path(tmp) / f"repo_{name}"
            models = fixed_fold_models(name, folds, shape)
            plans = {"preprocessing": cfg.to_dict(), "model": {"name": name}, "folds": folds}
            export_models(models, plans, repo, parity_inputs=random_suv(shape), operating_point=FIXED_POINT)
            row = measure(repo, scans, workers=2, rounds=1 if quick else 2)
            result.raw.setdefault("setups", []).append({"model": name, **row})
            r = list(row["rates_scans_per_s"].values())
            bound = min(r[0], r[1])
            table.add(
                f"{name} x {folds} folds",
                "x".join(map(str, shape)),
                *(fmt(v, 2) for v in r),
                f"{r[3] / bound:.0%}",
            )
            result.verdicts.append(
                f"{name} x {folds}: overlapped {r[3]:.2f} scans/s = {r[3] / bound:.0%} of the slower of "
                f"reading ({r[0]:.2f}/s) and the model alone ({r[1]:.2f}/s), {r[3] / r[2]:.2f}x the "
                "read-then-infer loop"
            )
            print(f"  {name}: " + ", ".join(f"{k} {v:.2f}/s" for k, v in row["rates_scans_per_s"].items()))
    table.notes += [
        f"{n_scans} synthetic full-size scans (gzip NIfTI in Bq/mL + BIDS-PET sidecar), fixed-seed random "
        "weights; one warm-up scan first. 'model only' = ONNX Runtime on inputs read beforehand (the "
        "model-bound rate); 'overlapped' = OfflinePredictor.predict_many, 2 reader threads, up to 4 scans "
        "ahead; 'CLI end to end' = `" + result.raw["setups"][0]["cli_command"] + "` as a new process "
        "(imports, repository verification, session creation included).",
        "Reading and inference share this machine's cores: overlapping can only reach the slower of the "
        "two rates when a core is free for the readers; ONNX Runtime uses every physical core by default.",
    ]
    result.tables.append(table)
    return result


if __name__ == "__main__":
    sys.exit(main())
