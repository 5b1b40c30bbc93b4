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


if __name__ == "__main__":
    sys.exit(main())
