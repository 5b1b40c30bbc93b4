"""Latency of the K-fold CNN3D ensemble at batch 1: PyTorch eager vs ONNX Runtime vs Triton (HTTP).

    .venv/bin/python bench/bench_serving.py --folds 10 --repeats 10 --out bench/results/serving.json

Random fixed-seed weights (latency does not depend on training); the study grid 128x128x82 by default.
Prints p50/p99 in seconds per request and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


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
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
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
        export_models(folds, plans, Path(tmp) / "repo", parity_inputs=x)
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


if __name__ == "__main__":
    main()
