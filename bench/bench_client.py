"""End-to-end client latency and throughput against a running gliodeploy Triton server.

For each concurrency level, predicts every scan ``--repeat`` times through
:meth:`GliodeployClient.predict_many` and reports per-scan latency p50/p99 (read + SUV + preprocess
+ request + response), the mean of each stage, and throughput (scans/s, wall clock).

    python bench/bench_client.py SCANS... --url localhost:8000 [--protocol grpc] [--assume-suv]
        [--concurrency 1 4 16] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gliodeploy.client.api import GliodeployClient, Prediction
from gliodeploy.client.discovery import discover_scans
from gliodeploy.utils.atomic import atomic_write

STAGES = ("read", "suv", "preprocess", "request", "total")


def run_level(client: GliodeployClient, scans: list, concurrency: int, repeat: int, **kw: object) -> dict:
    """Timings of ``repeat`` passes over ``scans`` at one concurrency level."""
    work = scans * repeat
    t0 = time.perf_counter()
    results = client.predict_many(work, concurrency=concurrency, **kw)
    wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, Prediction)]
    if not ok:
        raise SystemExit(f"every scan failed, first error: {results[0].error}")
    total = np.array([r.timings["total"] for r in ok]) * 1000
    return {
        "concurrency": concurrency,
        "scans": len(work),
        "failed": len(work) - len(ok),
        "p50_ms": float(np.percentile(total, 50)),
        "p99_ms": float(np.percentile(total, 99)),
        "throughput_scans_per_s": len(ok) / wall,
        "mean_stage_ms": {s: float(np.mean([r.timings.get(s, 0.0) for r in ok]) * 1000) for s in STAGES},
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--url", default="localhost:8000")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--assume-suv", action="store_true")
    ap.add_argument("--server-preprocess", action="store_true")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    scans = discover_scans(args.paths)
    kw = {"assume_suv": args.assume_suv, "server_preprocess": args.server_preprocess}
    rows = []
    with GliodeployClient(args.url, protocol=args.protocol) as client:
        info = client.info()
        client.predict_many(scans[:1], concurrency=1, **kw)  # warm-up: connection, model first call
        for c in args.concurrency:
            row = run_level(client, scans, c, args.repeat, **kw)
            rows.append(row)
            stages = " ".join(f"{s}={v:.1f}" for s, v in row["mean_stage_ms"].items())
            print(
                f"{args.protocol} c={c:<3d} n={row['scans']:<4d} p50={row['p50_ms']:.1f} ms "
                f"p99={row['p99_ms']:.1f} ms {row['throughput_scans_per_s']:.2f} scans/s | mean ms: {stages}"
            )
    if args.json_out:
        doc = {"model": info.to_dict(), "protocol": args.protocol, "levels": rows}
        atomic_write(args.json_out, json.dumps(doc, indent=2) + "\n")
    return 0


def run(quick: bool) -> object:
    """Suite entry: synthetic full-size NIfTI scans -> client -> bundled Triton (1-fold CNN3D, study grid)."""
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
    from gliodeploy.serving import TritonServer

    cfg = PreprocessConfig.demo() if quick else PreprocessConfig.study()
    n_scans, repeat = (2, 1) if quick else (4, 4)
    levels = (1, 4) if quick else (1, 4, 16)
    g = "x".join(map(str, cfg.shape))
    result = BenchResult(
        "client", f"Client end to end (synthetic full-size NIfTI -> {g}, 1-fold CNN3D, bundled Triton)"
    )
    table = Table(
        "Per scan: read + SUV + preprocessing + request + response (GliodeployClient.predict_many, HTTP)",
        ["concurrency", "scans", "failed", "p50 ms", "p99 ms", "scans/s", *(f"mean {s} ms" for s in STAGES)],
    )
    with tmpdir("client") as tmp:
        scans = synthetic_scans(Path(tmp) / "scans", n_scans)
        models = fixed_fold_models("cnn3d", 1, tuple(cfg.shape))
        plans = {"preprocessing": cfg.to_dict(), "model": {"name": "cnn3d"}, "folds": 1}
        export_models(
            models,
            plans,
            Path(tmp) / "repo",
            parity_inputs=random_suv(tuple(cfg.shape)),
            operating_point=FIXED_POINT,
        )
        with TritonServer(Path(tmp) / "repo", startup_timeout=300) as server:  # noqa: SIM117 - needs server
            with GliodeployClient(server.http_url, timeout=600) as client:
                client.predict_many(scans[:1], concurrency=1)  # warm-up
                for c in levels:
                    row = run_level(client, [str(p) for p in scans], c, repeat)
                    result.raw.setdefault("levels", []).append(row)
                    st = row["mean_stage_ms"]
                    table.add(
                        c,
                        row["scans"],
                        row["failed"],
                        fmt(row["p50_ms"]),
                        fmt(row["p99_ms"]),
                        fmt(row["throughput_scans_per_s"], 2),
                        *(fmt(st[s]) for s in STAGES),
                    )
                    print(
                        f"  c={c}: p50 {row['p50_ms']:.0f} ms, {row['throughput_scans_per_s']:.2f}/s",
                        flush=True,
                    )
    table.notes += [
        f"{n_scans} synthetic full-size scans (gzip NIfTI in Bq/mL + BIDS-PET sidecar) x {repeat} passes "
        "per level; one warm-up scan first.",
        "One fold instead of ten keeps the levels inside the suite's time budget: add the ensemble's "
        "extra model time from the ensemble table for a 10-fold deployment. 'request' = serialise + "
        "send + Triton + response; the client and the server share the same 2 cores.",
    ]
    result.tables.append(table)
    return result


if __name__ == "__main__":
    sys.exit(main())
