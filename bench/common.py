"""Shared pieces of the benchmark suite: timing, machine facts, load, results and Markdown tables.

Every benchmark module exposes ``run(quick: bool) -> BenchResult``; ``run_benchmarks.py`` adds the
machine, command, date and load average, saves the result as JSON in ``bench/results/`` and renders
BENCHMARKS.md from every saved result.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Table:
    """One Markdown table: a caption, column names, rows of cells, and notes printed below it."""

    caption: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        """Append one row (one cell per column)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.caption}: row has {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))


@dataclass
class BenchResult:
    """What one benchmark measured: its tables, a verdict line per goal, and raw numbers."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def stats_ms(times_s: list[float]) -> dict[str, float]:
    """mean/p50/p99/min of a list of durations in seconds, in milliseconds."""
    a = np.asarray(times_s, dtype=float) * 1000.0
    return {
        "n": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "min_ms": float(a.min()),
    }


def time_calls(fn: Callable[[], Any], repeats: int, *, warmup: int = 1) -> list[float]:
    """Durations (s) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages (other processes compete for the same cores)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return float("nan")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions and thread counts of this process."""
    import onnxruntime as ort
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "ort_intra_op_threads": "default (one per physical core)",
    }


@dataclass
class Stamp:
    """When a benchmark started and the load then; :meth:`document` adds them, with the duration, the
    load after and the machine, to its result (the header every BENCHMARKS.md section prints)."""

    date: str
    t0: float
    loadavg_before: list[float]

    @classmethod
    def start(cls) -> Stamp:
        """Stamp now."""
        return cls(time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter(), loadavg())

    def document(
        self, result: BenchResult, *, command: str, quick: bool, machine: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``result`` as the saved JSON document (``machine``: default :func:`machine_info`)."""
        doc = result.to_dict()
        doc.update(
            {
                "command": command,
                "quick": quick,
                "date": self.date,
                "duration_s": round(time.perf_counter() - self.t0, 1),
                "loadavg_before": self.loadavg_before,
                "loadavg_after": loadavg(),
                "machine": machine if machine is not None else machine_info(),
            }
        )
        return doc


def synthetic_scans(out_dir: Path, n: int, *, seed: int = 0, size: str = "full") -> list[Path]:
    """``n`` synthetic FDOPA NIfTI scans (Bq/mL + BIDS-PET sidecar) written under ``out_dir``."""
    from gliodeploy.synth import generate_cohort

    # The generator needs >= 4 subjects (both labels per site); extra ones are simply unused.
    manifest = generate_cohort(out_dir, n=max(n, 4), seed=seed, size=size, test_fraction=0.0, progress=False)
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [out_dir / r["image"] for r in rows[:n]]


def random_suv(shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    """A fixed-seed positive float32 ``[1, 1, *shape]`` input (latency does not depend on values)."""
    return np.random.default_rng(seed).gamma(2.0, 0.6, size=(1, 1, *shape)).astype(np.float32)


def fixed_fold_models(name: str, folds: int, shape: tuple[int, int, int], *, seed: int = 0) -> list[Any]:
    """``folds`` eval-mode models with fixed-seed random weights on the grid ``shape``."""
    import torch

    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = PreprocessConfig.study(shape=shape, spacing=_spacing_for(shape))
    torch.manual_seed(seed)
    return [build_model(name, preprocessing=cfg).eval() for _ in range(folds)]


def _spacing_for(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    # Same field of view as the study grid (128 x 128 x 82 at 2 mm).
    return tuple(2.0 * 128 / shape[0] for _ in range(3))  # type: ignore[return-value]


def export_ensemble_onnx(models: list[Any], shape: tuple[int, int, int], out: Path, **kw: Any) -> Path:
    """Export ``models`` as the gliodeploy fold-ensemble ONNX graph (in-graph normalisation) to ``out``."""
    from gliodeploy.export.ensemble import EnsembleModule
    from gliodeploy.export.onnx_export import export_onnx

    export_onnx(EnsembleModule(models), out, input_shape=shape, parity_inputs=random_suv(shape), **kw)
    return out


def tmpdir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for a benchmark's files."""
    return tempfile.TemporaryDirectory(prefix=f"gliodeploy-bench-{prefix}-")


def median(values: list[float]) -> float:
    """Median of ``values``."""
    return float(statistics.median(values))


def fmt(v: Any, digits: int = 1) -> str:
    """A table cell: floats with ``digits`` decimals, the rest as text."""
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


#: The decision rule of the benchmark's exports (a fixed threshold: the weights are random).
FIXED_POINT: dict[str, Any] = {
    "threshold": 0.5,
    "method": "fixed",
    "fitted_on": "benchmark: fixed-seed random weights",
    "validation_mode": None,
    "n": 0,
    "n_positive": 0,
    "sensitivity": None,
    "specificity": None,
    "temperature": None,
    "oof_sha256": None,
}
