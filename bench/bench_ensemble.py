"""The 10-fold CNN3D ensemble at batch 1: PyTorch eager vs ONNX Runtime, folds, grid size, FLOPs vs
this CPU's peak, and deployment ideas beyond the study (fp16, folds folded into grouped convs, ORT
graph optimisation levels and threads, INT8 quantisation).

    .venv/bin/python bench/run_benchmarks.py --only ensemble [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from common import (
    BenchResult,
    Table,
    export_ensemble_onnx,
    fixed_fold_models,
    fmt,
    random_suv,
    stats_ms,
    time_calls,
    tmpdir,
)

NAME = "ensemble"
STUDY = (128, 128, 82)
REDUCED = (64, 64, 41)


def _session(path: Path, *, level: str = "all", threads: int = 0):  # noqa: ANN202 - ort session
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_ms(sess, x: np.ndarray, repeats: int) -> dict:  # noqa: ANN001
    return stats_ms(time_calls(lambda: sess.run(None, {"suv": x}), repeats))


def peak_gflops(repeats: int = 5, n: int = 4096) -> dict[str, float]:
    """Best measured float32 GEMM rate (GFLOP/s) of torch and numpy on this process's threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n**3
    t = min(time_calls(lambda: torch.mm(a, b), repeats))
    an, bn = a.numpy(), b.numpy()
    tn = min(time_calls(lambda: an @ bn, max(2, repeats // 2)))
    return {"torch_gflops": flops / t / 1e9, "numpy_gflops": flops / tn / 1e9, "n": n}


def fold_flops(shape: tuple[int, int, int]) -> int:
    """FLOPs of one cnn3d fold at batch 1 (torch.utils.flop_counter; convs and matmuls, 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    (model,) = fixed_fold_models("cnn3d", 1, shape)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.from_numpy(random_suv(shape)))
    return int(counter.get_total_flops())


def run(quick: bool) -> BenchResult:
    """Every ensemble measurement; ``quick`` uses the reduced grid, 2 folds and single repeats."""
    import onnxruntime as ort
    import torch
    from folded import FoldedCNN3D

    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.onnx_export import export_onnx

    big = REDUCED if quick else STUDY
    k_max = 2 if quick else 10
    reps = 1 if quick else 3
    slow_reps = 1 if quick else 2  # the full-size 10-fold runs (seconds each)
    g = "x".join(map(str, big))
    result = BenchResult(NAME, f"Ensemble inference (CNN3D folds, batch 1, {g})")
    raw = result.raw
    x_big = random_suv(big)

    with tmpdir("ens") as tmp:
        tmp = Path(tmp)
        models = fixed_fold_models("cnn3d", k_max, big)
        ens = EnsembleModule(models)

        # -- 1. eager vs ONNX Runtime -------------------------------------------------------------
        t0 = time.perf_counter()
        onnx_k = export_ensemble_onnx(models, big, tmp / "ens.onnx")
        raw["export_s"] = time.perf_counter() - t0
        with torch.inference_mode():
            eager = stats_ms(time_calls(lambda: ens(torch.from_numpy(x_big)), slow_reps))
        sess_k = _session(onnx_k)
        ort_k = _ort_ms(sess_k, x_big, reps)
        speedup = eager["p50_ms"] / ort_k["p50_ms"]
        raw.update({"eager": eager, "onnxruntime": ort_k, "speedup": speedup})
        t1 = Table(
            f"{k_max}-fold ensemble at {g}, batch 1: PyTorch eager vs ONNX Runtime (CPU EP, all graph "
            "optimisations), ms",
            ["runtime", "runs", "p50", "p99", "min", "speed-up vs eager"],
        )
        t1.add("PyTorch eager (inference_mode)", eager["n"], *_cells(eager), "1.00x")
        t1.add("ONNX Runtime", ort_k["n"], *_cells(ort_k), f"{speedup:.2f}x")
        t1.notes.append(f"One warm-up call each; {slow_reps} timed eager and {reps} timed ORT calls.")
        result.tables.append(t1)
        result.verdicts.append(
            f"ONNX Runtime is {speedup:.2f}x eager PyTorch for the {k_max}-fold ensemble at {g} "
            f"({'meets' if speedup >= 2 else 'misses'} the >= 2x goal)."
        )
        print(f"  eager {eager['p50_ms']:.0f} ms, ort {ort_k['p50_ms']:.0f} ms", flush=True)

        # -- 2. latency vs folds and grid -----------------------------------------------------------
        t2 = Table(
            "ONNX Runtime latency vs folds and grid (batch 1), ms",
            ["grid", "folds", "runs", "p50", "p99", "ms per fold"],
        )
        grids = [REDUCED] if quick else [REDUCED, STUDY]
        for grid in grids:
            gx = random_suv(grid)
            for k in (1, 5, 10) if not quick else (1, 2):
                if grid == big and k == k_max:
                    s = ort_k
                else:
                    path = export_ensemble_onnx(fixed_fold_models("cnn3d", k, grid), grid, tmp / f"g{k}.onnx")
                    s = _ort_ms(_session(path), gx, reps if k < 10 else slow_reps)
                raw.setdefault("folds_grid", []).append({"grid": list(grid), "folds": k, **s})
                t2.add("x".join(map(str, grid)), k, s["n"], *_cells(s)[:2], fmt(s["p50_ms"] / k))
        result.tables.append(t2)

        # -- 3. FLOPs vs measured peak ----------------------------------------------------------------
        per_fold = fold_flops(big)
        peak = peak_gflops(2 if quick else 5)
        ens_flops = per_fold * k_max
        achieved = ens_flops / (ort_k["p50_ms"] / 1000) / 1e9
        eager_rate = ens_flops / (eager["p50_ms"] / 1000) / 1e9
        best_peak = max(peak["torch_gflops"], peak["numpy_gflops"])
        raw.update({"flops_per_fold": per_fold, "peak": peak, "ort_gflops": achieved})
        t3 = Table(
            "Compute: FLOPs per scan vs this CPU's measured float32 peak "
            f"({torch.get_num_threads()} threads)",
            ["quantity", "value"],
        )
        t3.add("FLOPs per fold (FlopCounterMode, 2 per multiply-add)", f"{per_fold / 1e9:.1f} GFLOP")
        t3.add(f"FLOPs per scan, {k_max}-fold ensemble", f"{ens_flops / 1e9:.1f} GFLOP")
        t3.add(f"peak: torch.mm {peak['n']}x{peak['n']} float32", f"{peak['torch_gflops']:.1f} GFLOP/s")
        t3.add(f"peak: numpy matmul {peak['n']}x{peak['n']} float32", f"{peak['numpy_gflops']:.1f} GFLOP/s")
        for what, rate in (("ONNX Runtime ensemble", achieved), ("PyTorch eager ensemble", eager_rate)):
            t3.add(what, f"{rate:.1f} GFLOP/s = {100 * rate / best_peak:.0f} % of peak")
        result.tables.append(t3)
        result.verdicts.append(
            f"The ensemble needs {ens_flops / 1e9:.0f} GFLOP per scan; ONNX Runtime sustains "
            f"{100 * achieved / best_peak:.0f} % of the measured GEMM peak ({best_peak:.0f} GFLOP/s), so "
            f"the floor on this CPU is ~{ens_flops / best_peak / 1e9:.1f} s per scan."
        )

        # -- 4. ideas beyond the study ---------------------------------------------------------------
        t4 = Table(
            f"Beyond the study, at {g}, batch 1 (ONNX Runtime CPU), ms",
            ["variant", "folds", "runs", "p50", "p99", "vs fp32 baseline", "max abs prob diff"],
        )
        one = models[:1]
        base1_path = export_ensemble_onnx(one, big, tmp / "one.onnx")
        base1 = _ort_ms(_session(base1_path), x_big, reps)
        ref1 = _session(base1_path).run(None, {"suv": x_big})[0]
        t4.add("fp32, 1 fold (baseline)", 1, base1["n"], *_cells(base1)[:2], "1.00x", "-")

        def variant(label: str, path: Path, folds: int, baseline: dict, ref: np.ndarray, **kw) -> None:
            sess = _session(path, **kw)
            s = _ort_ms(sess, x_big, reps if folds == 1 else slow_reps)
            diff = float(np.max(np.abs(sess.run(None, {"suv": x_big})[0] - ref)))
            row = {"variant": label, "folds": folds, **s, "max_abs_diff": diff}
            raw.setdefault("variants", []).append(row)
            ratio = baseline["p50_ms"] / s["p50_ms"]
            t4.add(label, folds, s["n"], *_cells(s)[:2], f"{ratio:.2f}x", f"{diff:.2g}")
            print(f"  {label}: {s['p50_ms']:.0f} ms", flush=True)

        for level in ("disabled", "basic", "extended"):
            variant(f"graph optimisation {level!r}", base1_path, 1, base1, ref1, level=level)
        for threads in (1, 2):
            variant(f"intra_op_num_threads={threads}", base1_path, 1, base1, ref1, threads=threads)
        fp16 = tmp / "fp16.onnx"
        export_onnx(EnsembleModule(one), fp16, input_shape=big, parity_inputs=x_big, fp16=True)
        variant("fp16 weights+activations", fp16, 1, base1, ref1)
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q8 = tmp / "int8.onnx"
            quantize_dynamic(str(base1_path), str(q8), weight_type=QuantType.QInt8)
            variant(f"INT8 dynamic quantisation (quantize_dynamic; {_int8_ops(q8)})", q8, 1, base1, ref1)
        except Exception as exc:  # record why, keep the other figures
            t4.add("INT8 dynamic quantisation", 1, 0, "failed", "-", "-", _why(exc))
        try:
            q8s = tmp / "int8s.onnx"
            _quantize_static(base1_path, q8s, x_big)
            label = f"INT8 static QDQ (quantize_static, 1 calibration scan; {_int8_ops(q8s)})"
            variant(label, q8s, 1, base1, ref1)
        except Exception as exc:
            t4.add("INT8 static quantisation", 1, 0, "failed", "-", "-", _why(exc))
        refk = sess_k.run(None, {"suv": x_big})[0]
        t4.add(f"fp32, {k_max} folds (baseline)", k_max, ort_k["n"], *_cells(ort_k)[:2], "1.00x", "-")
        folded = tmp / "folded.onnx"
        export_onnx(FoldedCNN3D(models), folded, input_shape=big, parity_inputs=x_big)
        variant(f"{k_max} folds folded into one grouped-conv graph", folded, k_max, ort_k, refk)
        t4.notes += [
            "'vs fp32 baseline' is baseline p50 / variant p50 (>1 = faster). Probability differences are "
            "against the fp32 ONNX graph on one random-weight input: a trained model's sensitivity "
            "can differ.",
            "fp16 keeps float32 inputs/outputs (ONNX Runtime's converter): on a CPU without native fp16 "
            "kernels it adds casts; it is meant for GPUs.",
            "The folded graph (bench/folded.py) stacks the K folds' filters as channel groups: 4 convs "
            "with groups=K instead of 4K separate convs, same outputs.",
        ]
        result.tables.append(t4)
        _ = ort  # imported first so a missing onnxruntime fails before the long exports
    return result


def _quantize_static(src: Path, dst: Path, x: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"suv": x}])

        def get_next(self):  # noqa: ANN202
            return next(self._it, None)

    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ)


def _int8_ops(path: Path) -> str:
    """How many quantised nodes a graph holds (0 would mean quantisation changed nothing)."""
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    kinds = ("ConvInteger", "MatMulInteger", "QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv")
    return ", ".join(f"{ops.count(k)} {k}" for k in kinds if ops.count(k)) or "no quantised nodes"


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:120]


def _cells(s: dict) -> list[str]:
    return [fmt(s["p50_ms"]), fmt(s["p99_ms"]), fmt(s["min_ms"])]
