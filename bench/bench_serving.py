"""Latency of the K-fold CNN3D ensemble at batch 1: PyTorch eager vs ONNX Runtime vs Triton (HTTP).

    .venv/bin/python bench/bench_serving.py --folds 10 --repeats 10 --out bench/results/serving_cli.json

Random fixed-seed weights (latency does not depend on training); the study grid 128x128x82 by default.
Prints p50/p99 in seconds per request and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    FIXED_POINT,
    BenchResult,
    Table,
    fixed_fold_models,
    fmt,
    stats_ms,
    time_calls,
    tmpdir,
)

NAME = "serving"


def _percentiles(times: list[float]) -> dict[str, float]:
    return {
        "p50_s": float(np.percentile(times, 50)),
        "p99_s": float(np.percentile(times, 99)),
        "n": len(times),
    }


def _time(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preset", default="study", help="PreprocessConfig preset: study, demo or tiny")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving_cli.json"))
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    import tritonclient.http as httpclient

    from gliodeploy import contract
    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.pipeline import export_models
    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig
    from gliodeploy.serving import TritonServer

    cfg = PreprocessConfig.preset(args.preset)
    torch.manual_seed(0)
    folds = [build_model("cnn3d", preprocessing=cfg).eval() for _ in range(args.folds)]
    x = np.random.default_rng(0).gamma(2.0, 1.0, size=(1, 1, *cfg.shape)).astype(np.float32)
    results: dict[str, object] = {
        "folds": args.folds,
        "shape": list(cfg.shape),
        "threads": torch.get_num_threads(),
    }

    ensemble = EnsembleModule(folds)
    with torch.inference_mode():
        results["pytorch_eager"] = _time(lambda: ensemble(torch.from_numpy(x)), args.repeats)
    print("pytorch eager", results["pytorch_eager"], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        plans = {"preprocessing": cfg.to_dict(), "model": {"name": "cnn3d"}, "folds": args.folds}
        export_models(folds, plans, Path(tmp) / "repo", parity_inputs=x, operating_point=FIXED_POINT)
        onnx_path = Path(tmp) / "repo" / contract.ENSEMBLE_MODEL / "1" / "model.onnx"
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        results["onnxruntime"] = _time(lambda: sess.run(None, {contract.INPUT_SUV: x}), args.repeats)
        print("onnxruntime", results["onnxruntime"], flush=True)
        with TritonServer(Path(tmp) / "repo", startup_timeout=300) as server:
            client = httpclient.InferenceServerClient(server.http_url, network_timeout=600)
            inp = httpclient.InferInput(contract.INPUT_SUV, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            results["triton_http"] = _time(lambda: client.infer(contract.ENSEMBLE_MODEL, [inp]), args.repeats)
        print("triton http", results["triton_http"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _concurrent(url: str, x: np.ndarray, concurrency: int, requests: int) -> dict:
    """``requests`` batch-1 HTTP requests from ``concurrency`` threads: latency stats and throughput."""
    import tritonclient.http as httpclient

    from gliodeploy import contract

    local = threading.local()

    def one(_: int) -> float:
        if not hasattr(local, "client"):  # tritonclient's HTTP client is not thread-safe
            local.client = httpclient.InferenceServerClient(url, network_timeout=600)
        inp = httpclient.InferInput(contract.INPUT_SUV, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        t0 = time.perf_counter()
        local.client.infer(contract.ENSEMBLE_MODEL, [inp])
        return time.perf_counter() - t0

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: one connection per thread
        t0 = time.perf_counter()
        times = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    return {**stats_ms(times), "throughput_per_s": requests / wall, "concurrency": concurrency}


def run(quick: bool) -> BenchResult:
    """Direct ONNX Runtime vs the bundled Triton (python backend + ORT) at batch 1 and under concurrency."""
    # Batch 1 on the study grid; concurrency on the reduced grid (8x less compute per request) so
    # that the levels fit in the suite's time budget.
    grids = [("batch 1", (64, 64, 41) if quick else (128, 128, 82)), ("concurrency", (64, 64, 41))]
    folds = 2 if quick else 10
    reps = 2 if quick else 5
    levels = (1, 4) if quick else (1, 4, 8)
    result = BenchResult(NAME, f"Triton overhead ({folds}-fold CNN3D ensemble, bundled Triton, HTTP)")
    t1 = Table(
        "Batch 1: ONNX Runtime in-process vs the same ONNX file through Triton "
        "(python backend + ORT, HTTP on 127.0.0.1), ms",
        ["grid", "path", "runs", "p50", "p99", "Triton overhead p50"],
    )
    t2 = Table(
        "Under concurrency (grid 64x64x41): throughput and per-request latency",
        ["path", "concurrency", "requests", "p50 ms", "p99 ms", "requests/s"],
    )
    seen: dict = {}
    with tmpdir("serve") as tmp:
        _levels(quick, grids, folds, reps, levels, seen, tmp, result, t1, t2)
    t1.notes.append(
        f"One warm-up request each; {reps} timed requests, direct and Triton calls interleaved so load "
        "changes hit both. Random fixed-seed weights."
    )
    t2.notes.append(
        "Concurrency >1 overlaps requests only as far as the local profile's instance count and "
        "dynamic batching allow (export/ profiles); the 2 cores are shared by every instance."
    )
    result.tables += [t1, t2]
    return result


def _levels(quick, grids, folds, reps, levels, seen, tmp, result, t1, t2) -> None:  # noqa: ANN001
    """Export each grid once, then time direct ORT vs Triton (batch 1) or the concurrency levels."""
    import onnxruntime as ort
    import tritonclient.http as httpclient
    from common import random_suv

    from gliodeploy import contract
    from gliodeploy.export.pipeline import export_models
    from gliodeploy.serving import TritonServer

    for what, grid in grids:
        if grid in seen:
            repo, direct, sess = seen[grid]
        else:
            models = fixed_fold_models("cnn3d", folds, grid)
            x = random_suv(grid)
            repo = Path(tmp) / "x".join(map(str, grid))
            plans = {"preprocessing": _cfg(grid).to_dict(), "model": {"name": "cnn3d"}, "folds": folds}
            export_models(models, plans, repo, parity_inputs=x, operating_point=FIXED_POINT)
            onnx_path = repo / contract.ENSEMBLE_MODEL / "1" / "model.onnx"
            sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            direct = stats_ms(time_calls(lambda s=sess, x=x: s.run(None, {contract.INPUT_SUV: x}), reps))
            seen[grid] = (repo, direct, sess)
        x = random_suv(grid)
        g = "x".join(map(str, grid))
        with TritonServer(repo, startup_timeout=300) as server:
            if what == "batch 1":
                client = httpclient.InferenceServerClient(server.http_url, network_timeout=600)
                inp = httpclient.InferInput(contract.INPUT_SUV, list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                # Interleave direct and Triton calls so that a change in machine load hits both alike.
                client.infer(contract.ENSEMBLE_MODEL, [inp])  # warm-up
                d_times, t_times = [], []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    sess.run(None, {contract.INPUT_SUV: x})
                    d_times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.infer(contract.ENSEMBLE_MODEL, [inp])
                    t_times.append(time.perf_counter() - t0)
                direct, triton = stats_ms(d_times), stats_ms(t_times)
                over = triton["p50_ms"] / direct["p50_ms"] - 1
                t1.add(
                    g, "ONNX Runtime direct", direct["n"], fmt(direct["p50_ms"]), fmt(direct["p99_ms"]), "-"
                )
                t1.add(
                    g,
                    "Triton HTTP",
                    triton["n"],
                    fmt(triton["p50_ms"]),
                    fmt(triton["p99_ms"]),
                    f"{100 * over:+.1f} %",
                )
                result.raw["batch1"] = {
                    "grid": list(grid),
                    "direct": direct,
                    "triton": triton,
                    "overhead": over,
                }
                result.verdicts.append(
                    f"Triton adds {100 * over:+.1f} % at batch 1 on {g} "
                    f"({triton['p50_ms'] - direct['p50_ms']:+.0f} ms; goal < 10 %: "
                    f"{'met' if over < 0.10 else 'missed'})."
                )
            else:
                t2.add(
                    "ONNX Runtime direct, sequential",
                    1,
                    direct["n"],
                    fmt(direct["p50_ms"]),
                    fmt(direct["p99_ms"]),
                    fmt(1000 / direct["mean_ms"], 2),
                )
                for c in levels:
                    r = _concurrent(server.http_url, x, c, 2 * c if not quick else c)
                    result.raw.setdefault("concurrency", []).append(r)
                    t2.add(
                        "Triton HTTP",
                        c,
                        r["n"],
                        fmt(r["p50_ms"]),
                        fmt(r["p99_ms"]),
                        fmt(r["throughput_per_s"], 2),
                    )
                    print(f"  c={c}: p50 {r['p50_ms']:.0f} ms, {r['throughput_per_s']:.2f} req/s", flush=True)


def _cfg(grid: tuple[int, int, int]):  # noqa: ANN202 - PreprocessConfig
    from gliodeploy.preprocessing import PreprocessConfig

    return PreprocessConfig.study() if grid == (128, 128, 82) else PreprocessConfig.demo()


if __name__ == "__main__":
    main()
