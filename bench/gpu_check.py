"""The prepared GPU check (issue #12, item 5): one script, under 10 minutes on an H100/H200-class GPU.

    bash bench/gpu_check.sh                                  # on the GPU machine (see the .sh header)
    .venv/bin/python bench/gpu_check.py --smoke --out DIR    # the same code on the CPU, tiny (tests)

What it measures (each section says ``not run: <why>`` instead of failing the others):

1. **machine**: GPU name, memory, driver, CUDA; torch / onnxruntime versions and providers.
2. **providers**: the K-fold CNN3D ensemble graph at 128x128x82 (the graph ``gliodeploy export``
   writes, fixed-seed random weights, or ``--onnx`` for a trained one) under ONNX Runtime's
   CUDA provider, TensorRT FP32 and TensorRT FP16 at batch 1 / 8 / 32: engine build time (first run),
   p50 / p99 per batch, milliseconds per scan and GPU memory in use.
3. **fp16**: TensorRT FP16 (else the CUDA provider on an FP16 graph) against FP32 on the reference
   cases (``--reference cases.npz`` with ``inputs`` ``[N,1,X,Y,Z]`` and ``threshold``; default: the
   smoke inputs): max |delta p| and decision flips at the threshold.
4. **training**: one PyTorch training step per architecture at batch 10 (the study's) with bf16
   autocast (AMP), Adam: p50 seconds and peak GPU memory.

The end-to-end Triton latency goal (ensemble p50 < 20 ms at batch 1) needs NVIDIA's container
(onnxruntime backend with TensorRT): run ``bench/bench_serving.py --url`` against it; this script
measures the model-bound part that bounds it from below.

Results: ``OUT/gpu_check.json`` in the benchmark result format (rendered into BENCHMARKS.md by
``bench/run_benchmarks.py --render`` once copied to ``bench/results/gpu_check.json``) and
``OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common` beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the gliodeploy package (no install)

from common import BenchResult, Stamp, Table, fmt, random_suv, stats_ms  # noqa: E402

STUDY_SHAPE = (128, 128, 82)
#: Largest |delta p| between TensorRT FP16 and FP32 accepted on the reference cases (the ensemble
#: probability); a decision flip at the operating point fails the check whatever the difference.
FP16_TOLERANCE = 1e-2


class Budget:
    """Wall-clock budget: sections that would start after it are reported as not run."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left."""
        return self.deadline - time.monotonic()


def _not_run(table: Table, why: str) -> None:
    table.notes.append(f"not run: {why}")


def _gpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"gpu": None}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        facts["gpu"] = out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError) as exc:
        facts["gpu_error"] = f"nvidia-smi: {exc}"
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        facts["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            facts["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        facts["torch"] = None
    try:
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
        facts["ort_providers"] = ort.get_available_providers()
    except ImportError:
        facts["onnxruntime"] = None
        facts["ort_providers"] = []
    return facts


def machine(facts: dict[str, Any]) -> dict[str, Any]:
    """The machine block of a benchmark result (the fields ``render_section`` prints) plus the GPU."""
    gpu = facts.get("gpu") or facts.get("torch_device") or "no GPU found"
    return {
        "cpu": f"{gpu} · host {platform.processor() or platform.machine()}",
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": "?",
        "torch": facts.get("torch"),
        "torch_threads": "-",
        "onnxruntime": facts.get("onnxruntime"),
        "ort_intra_op_threads": "providers " + ", ".join(facts.get("ort_providers") or []),
        "numpy": np.__version__,
        **facts,
    }


def gpu_memory_used_mib() -> float | None:
    """Device-wide memory in use (MiB), whoever allocated it (ONNX Runtime's arena included)."""
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return (total - free) / 2**20
    except ImportError:
        pass
    return None


def ensemble_onnx(out_dir: Path, folds: int, shape: tuple[int, int, int], onnx_path: Path | None) -> Path:
    """The ensemble graph to measure: ``onnx_path`` as given, else K fixed-seed CNN3D folds exported here."""
    if onnx_path is not None:
        return onnx_path
    from common import export_ensemble_onnx, fixed_fold_models

    path = out_dir / f"cnn3d_x{folds}.onnx"
    if not path.is_file():
        export_ensemble_onnx(fixed_fold_models("cnn3d", folds, shape), shape, path)
    return path


def tensorrt_provider(
    shape: tuple[int, int, int], max_batch: int, cache: Path, *, fp16: bool
) -> tuple[str, dict[str, Any]]:
    """ONNX Runtime's TensorRT provider with a profile for batch 1..``max_batch`` and on-disk caches."""
    dims = "x".join(map(str, shape))
    return (
        "TensorrtExecutionProvider",
        {
            "trt_fp16_enable": fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": f"suv:1x1x{dims}",
            "trt_profile_opt_shapes": f"suv:1x1x{dims}",
            "trt_profile_max_shapes": f"suv:{max_batch}x1x{dims}",
        },
    )


def provider_configs(
    available: list[str], shape: tuple[int, int, int], max_batch: int, cache: Path
) -> list[tuple[str, list[Any]]]:
    """(label, providers) for each configuration this ONNX Runtime can run, CPU last as a reference."""

    def trt(fp16: bool) -> tuple[str, dict[str, Any]]:
        return tensorrt_provider(shape, max_batch, cache, fp16=fp16)

    configs: list[tuple[str, list[Any]]] = []
    if "CUDAExecutionProvider" in available:
        configs.append(("ORT CUDA fp32", ["CUDAExecutionProvider"]))
    if "TensorrtExecutionProvider" in available:
        configs.append(("ORT TensorRT fp32", [trt(False), "CUDAExecutionProvider"]))
        configs.append(("ORT TensorRT fp16", [trt(True), "CUDAExecutionProvider"]))
    if not configs:
        configs.append(("ORT CPU fp32 (no GPU provider)", ["CPUExecutionProvider"]))
    return configs


def _timed(fn: Callable[[], Any], repeats: int, budget: Budget) -> list[float]:
    times: list[float] = []
    for _ in range(repeats):
        if budget.left() < 5:
            break
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def providers_section(
    onnx_path: Path,
    shape: tuple[int, int, int],
    folds: int,
    batches: list[int],
    repeats: int,
    budget: Budget,
    raw: dict[str, Any],
) -> Table:
    """Latency and memory per provider configuration and batch size."""
    table = Table(
        f"{folds}-fold CNN3D ensemble at {'x'.join(map(str, shape))}: ONNX Runtime providers, per batch",
        ["configuration", "batch", "first run s", "p50 ms", "p99 ms", "ms / scan", "GPU MiB in use"],
    )
    try:
        import onnxruntime as ort
    except ImportError as exc:
        _not_run(table, f"onnxruntime missing ({exc})")
        return table
    cache = onnx_path.parent / "trt-cache"
    cache.mkdir(exist_ok=True)
    raw["providers"] = {}
    for label, providers in provider_configs(ort.get_available_providers(), shape, max(batches), cache):
        if budget.left() < 30:
            _not_run(table, f"{label}: time budget spent")
            continue
        try:
            sess = ort.InferenceSession(str(onnx_path), providers=providers)
        except Exception as exc:  # a provider that cannot load is a finding, not a crash
            _not_run(table, f"{label}: session failed ({type(exc).__name__}: {exc})")
            continue
        raw["providers"][label] = {"session_providers": sess.get_providers()}
        for batch in batches:
            x = np.repeat(random_suv(shape), batch, axis=0)
            t0 = time.perf_counter()
            sess.run(None, {"suv": x})  # TensorRT builds (or loads) its engine here
            first = time.perf_counter() - t0
            s = stats_ms(
                _timed(lambda x=x, sess=sess: sess.run(None, {"suv": x}), repeats, budget) or [first]
            )
            mem = gpu_memory_used_mib()
            raw["providers"][label][str(batch)] = {"first_run_s": first, **s, "gpu_mib": mem}
            table.add(
                label,
                batch,
                fmt(first, 2),
                fmt(s["p50_ms"], 1),
                fmt(s["p99_ms"], 1),
                fmt(s["p50_ms"] / batch, 2),
                "-" if mem is None else fmt(mem, 0),
            )
        del sess
    table.notes.append(
        f"{repeats} timed runs per cell after one untimed first run (which includes the TensorRT engine "
        "build unless its cache held it); GPU memory is device-wide (torch.cuda.mem_get_info)."
    )
    return table


def fp16_section(
    onnx_path: Path, inputs: np.ndarray, threshold: float, budget: Budget, raw: dict[str, Any]
) -> Table:
    """FP16 against FP32 on the reference cases: max |delta p| and decision flips."""
    table = Table(
        f"FP16 against FP32 on {len(inputs)} reference case(s), threshold {threshold:g}",
        ["configuration", "max abs delta p", "decision flips", f"within {FP16_TOLERANCE:g}"],
    )
    try:
        import onnxruntime as ort
    except ImportError as exc:
        _not_run(table, f"onnxruntime missing ({exc})")
        return table
    available = ort.get_available_providers()
    fp32_providers = (
        ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]
    )
    if "TensorrtExecutionProvider" not in available:
        _not_run(
            table,
            "TensorRT provider not available in this onnxruntime (install onnxruntime-gpu with TensorRT)",
        )
        return table
    if budget.left() < 60:
        _not_run(table, "time budget spent")
        return table
    ref = ort.InferenceSession(str(onnx_path), providers=fp32_providers)
    shape = tuple(inputs.shape[2:])
    trt = ort.InferenceSession(
        str(onnx_path),
        providers=[
            tensorrt_provider(shape, len(inputs), onnx_path.parent / "trt-cache", fp16=True),
            "CUDAExecutionProvider",
        ],
    )
    p32 = ref.run(["probability"], {"suv": inputs})[0].ravel()
    p16 = trt.run(["probability"], {"suv": inputs})[0].ravel()
    delta = float(np.max(np.abs(p16 - p32)))
    flips = int(np.sum((p16 >= threshold) != (p32 >= threshold)))
    raw["fp16"] = {"p32": p32.tolist(), "p16": p16.tolist(), "max_abs_delta": delta, "flips": flips}
    table.add(
        "TensorRT fp16 vs " + fp32_providers[0],
        f"{delta:.2e}",
        flips,
        "yes" if delta <= FP16_TOLERANCE else "no",
    )
    return table


def training_section(
    shape: tuple[int, int, int],
    models: list[str],
    batch: int,
    steps: int,
    budget: Budget,
    raw: dict[str, Any],
) -> Table:
    """One AMP (bf16 autocast) training step per architecture on the GPU."""
    table = Table(
        f"Training step per architecture at {'x'.join(map(str, shape))}, batch {batch}, bf16 autocast + Adam",
        ["model", "parameters", "step p50 s", "peak GPU MiB"],
    )
    try:
        import torch

        from gliodeploy.models import build_model
        from gliodeploy.models.registry import count_parameters
        from gliodeploy.preprocessing.config import PreprocessConfig
    except ImportError as exc:
        _not_run(table, f"torch or a model library missing ({exc})")
        return table
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        table.notes.append("no CUDA device: measured on the CPU (smoke run only)")
    cfg = PreprocessConfig.study(shape=shape, spacing=tuple(2.0 * 128 / shape[0] for _ in range(3)))
    x = torch.from_numpy(np.repeat(random_suv(shape), batch, axis=0)).to(device)
    y = torch.tensor([[float(i % 2)] for i in range(batch)], device=device)
    raw["training"] = {}
    for name in models:
        if budget.left() < 20:
            _not_run(table, f"{name}: time budget spent")
            continue
        try:
            torch.manual_seed(0)
            model = build_model(name, preprocessing=cfg).to(device).train()
        except Exception as exc:  # e.g. MONAI not carried to the GPU machine
            _not_run(table, f"{name}: {type(exc).__name__}: {exc}")
            continue
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(m=model, o=opt, loss_fn=loss_fn) -> None:  # noqa: ANN001 - bound defaults
            o.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = loss_fn(m(x).float(), y)
            loss.backward()
            o.step()
            if cuda:
                torch.cuda.synchronize()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        step()  # warm-up: cuDNN autotuning, allocator
        s = stats_ms(_timed(step, steps, budget) or [float("nan")])
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        raw["training"][name] = {"parameters": count_parameters(model), **s, "peak_mib": peak}
        table.add(
            name,
            f"{count_parameters(model):,}",
            fmt(s["p50_ms"] / 1000, 3),
            "-" if peak is None else fmt(peak, 0),
        )
        del model, opt
        if cuda:
            torch.cuda.empty_cache()
    table.notes.append(f"{steps} timed steps after one warm-up step per model.")
    return table


def verdicts(raw: dict[str, Any], batches: list[int]) -> list[str]:
    """Goal lines: ensemble batch-1 p50 below 20 ms (model-bound part), FP16 within tolerance."""
    out = []
    best = [
        (cells["1"]["p50_ms"], label)
        for label, cells in raw.get("providers", {}).items()
        if "1" in cells and "CPU" not in label
    ]
    if best:
        ms, label = min(best)
        ok = "met" if ms < 20 else "not met"
        out.append(
            f"Ensemble batch-1 p50 model-bound: {ms:.1f} ms with {label} "
            f"(goal < 20 ms end to end: {ok} for the model part)."
        )
    else:
        out.append("No GPU provider measured: the < 20 ms goal is unverified.")
    if "fp16" in raw:
        f = raw["fp16"]
        ok = f["flips"] == 0 and f["max_abs_delta"] <= FP16_TOLERANCE
        out.append(
            f"TensorRT FP16: max |delta p| {f['max_abs_delta']:.2e}, {f['flips']} decision flip(s): "
            f"{'accepted' if ok else 'REJECTED'}."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns 0 (sections that cannot run say why in the result)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, required=True, help="folder for gpu_check.json/.md and the ONNX graph"
    )
    ap.add_argument("--onnx", type=Path, help="ensemble ONNX to measure (default: fixed-seed CNN3D folds)")
    ap.add_argument("--reference", type=Path, help="reference cases .npz: inputs [N,1,X,Y,Z], threshold")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--train-batch", type=int, default=10)
    ap.add_argument("--models", nargs="+", help="architectures for the training step (default: all)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting sections after this (s)")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny grid, 2 folds, few repeats: checks the script on a CPU"
    )
    args = ap.parse_args(argv)
    shape = (32, 32, 20) if args.smoke else STUDY_SHAPE
    folds = 2 if args.smoke else args.folds
    batches = [1, 2] if args.smoke else args.batches
    repeats = 2 if args.smoke else args.repeats
    train_batch = 2 if args.smoke else args.train_batch
    from gliodeploy.models import MODEL_NAMES

    models = args.models or (["cnn3d", "lesionnet"] if args.smoke else list(MODEL_NAMES))
    args.out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_s)
    stamp = Stamp.start()
    facts = _gpu_facts()
    raw: dict[str, Any] = {"shape": list(shape), "folds": folds, "smoke": args.smoke}
    onnx_path = ensemble_onnx(args.out, folds, shape, args.onnx)
    if args.reference is not None:
        with np.load(args.reference) as ref:
            inputs = ref["inputs"].astype(np.float32)
            threshold = float(ref["threshold"]) if "threshold" in ref else 0.5
    else:
        inputs = np.concatenate([random_suv(shape, seed=s) for s in range(4)])
        threshold = 0.5
    result = BenchResult(
        "gpu_check",
        "GPU check: ONNX Runtime CUDA / TensorRT, FP16 parity, AMP training steps",
        tables=[
            providers_section(onnx_path, shape, folds, batches, repeats, budget, raw),
            fp16_section(onnx_path, inputs, threshold, budget, raw),
            training_section(shape, models, train_batch, 2 if args.smoke else 5, budget, raw),
        ],
        raw=raw,
    )
    result.verdicts = verdicts(raw, batches)
    doc = stamp.document(
        result,
        command="bash bench/gpu_check.sh" + (" (smoke)" if args.smoke else ""),
        quick=args.smoke,
        machine=machine(facts),
    )
    from run_benchmarks import save_result

    print(save_result(doc, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
