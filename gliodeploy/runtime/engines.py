"""Create the engine that runs an exported ensemble graph on CPU, and choose one by measurement.

Engines (:data:`ENGINES`) and precisions (:data:`PRECISIONS`):

* ``onnxruntime`` ``fp32``: ONNX Runtime's CPU (or CUDA) provider on ``model.onnx``: the reference
  float32 graph every other choice is compared with;
* ``openvino`` ``fp32`` / ``bf16``: OpenVINO's own runtime (``openvino.Core().compile_model``) reading
  ``model.onnx`` as it is, with ``INFERENCE_PRECISION_HINT`` f32 or bf16. bf16 needs a CPU that computes
  it (AMX or AVX512-BF16): elsewhere OpenVINO would emulate it slower than float32, so it is refused;
* ``int8`` (both engines): ``model.int8.onnx``, the graph with its convolutions and matrix products
  quantised after training (QDQ, calibrated on the run's training scans at export:
  :mod:`gliodeploy.runtime.quantize`); OpenVINO runs the rest in float32.

OpenVINO's runtime rather than ONNX Runtime's OpenVINO execution provider: measured on the same graph
(1-fold CNN3D at 128x128x82, Intel Xeon with AMX, 2 cores) both give the same float32 speed
(532 vs 528 ms), but the provider ships as ``onnxruntime-openvino``, a replacement of the
``onnxruntime`` package pinned to an older release (it cannot sit beside the ``onnxruntime`` the rest of
gliodeploy uses), and sets bf16 only through a raw ``load_config``.

:func:`choose_auto` is the ``auto`` rule: given reference inputs, their float32 probabilities and the
operating point, it keeps the fastest candidate whose decisions all equal float32's and whose
probabilities stay within :data:`PROBABILITY_TOLERANCE`; otherwise float32, with the reason in words.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
AUTO = "auto"
#: File name of the int8 graph beside ``model.onnx`` in a version folder.
INT8_MODEL = "model.int8.onnx"
#: The ``auto`` guard: largest accepted |P(recurrence) - float32 P(recurrence)| on any reference case.
#: Measured on the trained demo ensemble (BENCHMARKS.md, cpu_guard): the reference cases understate
#: the differences on real scans ~2.5-3x (bf16 8e-5 vs 2.5e-4 on 60 external scans, AUC unchanged;
#: min/max int8 0.0041 vs 0.010, external AUC -0.006). 0.002 here ~ 0.006 on real scans: it keeps
#: bf16 (<= 9e-4 even on random weights) and refuses that int8. Decisions must agree as well.
PROBABILITY_TOLERANCE = 0.002
OUTPUTS = (contract.OUTPUT_PROBABILITY, contract.OUTPUT_FOLD_PROBABILITIES, contract.OUTPUT_LOGIT)


@dataclass(frozen=True)
class EngineChoice:
    """An engine and a precision, e.g. ``openvino/bf16``."""

    engine: str
    precision: str

    def __str__(self) -> str:
        return f"{self.engine}/{self.precision}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return asdict(self)


#: The float32 ONNX Runtime graph every other choice is compared with (and the last fallback).
REFERENCE = EngineChoice("onnxruntime", "fp32")


def check_names(engine: str, precision: str, *, allow_auto: bool = True) -> None:
    """Raise :class:`ConfigError` for an unknown engine or precision (``auto`` allowed if asked)."""
    extra = (AUTO,) if allow_auto else ()
    if engine not in (*ENGINES, *extra):
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join((*ENGINES, *extra))}")
    if precision not in (*PRECISIONS, *extra):
        raise ConfigError(
            f"unknown precision {precision!r}; expected one of {', '.join((*PRECISIONS, *extra))}"
        )


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bf16 itself (AMX-BF16 or AVX512-BF16), rather than emulating it."""
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def cpu_summary(flags: frozenset[str] | None = None) -> str:
    """The CPU flags that matter here, e.g. ``AVX2 AVX-512 VNNI AMX-BF16 AMX-INT8``."""
    flags = cpu_flags() if flags is None else flags
    names = {
        "avx2": "AVX2",
        "avx512f": "AVX-512",
        "avx512_vnni": "AVX512-VNNI",
        "avx_vnni": "AVX-VNNI",
        "avx512_bf16": "AVX512-BF16",
        "amx_bf16": "AMX-BF16",
        "amx_int8": "AMX-INT8",
    }
    return " ".join(v for k, v in names.items() if k in flags) or "none of AVX2/AVX-512/AMX"


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version()).split("-")[0]


def model_file(model_path: str | Path, precision: str) -> Path:
    """The graph a precision runs: ``model.onnx`` itself, or ``model.int8.onnx`` beside it for int8."""
    path = Path(model_path)
    return path.with_name(INT8_MODEL) if precision == "int8" else path


def unavailable(
    choice: EngineChoice, model_path: str | Path, flags: frozenset[str] | None = None
) -> str | None:
    """Why ``choice`` cannot run here, in one line, or None when it can."""
    check_names(choice.engine, choice.precision, allow_auto=False)
    if choice.engine == "openvino" and openvino_version() is None:
        return 'OpenVINO is not installed (pip install "gliodeploy[openvino]")'
    if choice.precision == "bf16":
        if choice.engine == "onnxruntime":
            return "ONNX Runtime has no bf16 CPU kernels; bf16 runs with engine openvino"
        if not native_bf16(flags):
            return f"this CPU ({cpu_summary(flags)}) has no AMX-BF16 or AVX512-BF16: bf16 would be emulated"
    if choice.precision == "int8" and not model_file(model_path, "int8").is_file():
        return (
            f'{Path(model_path).parent} has no {INT8_MODEL} (export with cpu_precision = "int8" or '
            '"auto" in the profile: it is calibrated on the training scans then)'
        )
    return None


class Engine:
    """One loaded graph. :meth:`run` maps ``[B, 1, X, Y, Z]`` SUV to the three named outputs."""

    choice: EngineChoice
    path: Path
    input_type: type = np.float32
    #: Execution providers (ONNX Runtime) or device (OpenVINO), for describe()/runtime facts.
    providers: list[str]
    version: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of :data:`OUTPUTS` for ``batch``."""
        raise NotImplementedError

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """P(recurrence) per scan, ``[B]`` (what ``auto`` compares)."""
        return np.asarray(self.run(batch)[contract.OUTPUT_PROBABILITY], dtype=np.float64).reshape(-1)

    def describe(self) -> str:
        """``openvino 2026.4.1 bf16 (CPU)``-like text."""
        return f"{self.choice.engine} {self.version} {self.choice.precision} ({', '.join(self.providers)})"

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts: engine, precision, version, graph file, providers."""
        return {
            **self.choice.to_dict(),
            "version": self.version,
            "graph": self.path.name,
            "providers": self.providers,
        }


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class _OrtEngine(Engine):
    def __init__(self, choice: EngineChoice, path: Path, threads: int, providers: Sequence[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1  # one graph at a time, threads inside ops
        options.log_severity_level = 3  # a CUDA provider that cannot start falls back to CPU quietly
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.choice, self.path, self.version = choice, path, ort.__version__
        self.providers = list(self.session.get_providers())
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        suv = inputs.get(contract.INPUT_SUV)
        if suv is None or suv.type not in _ORT_TYPES or not set(OUTPUTS) <= outputs:
            raise ModelError(
                f"{path}: expected input {contract.INPUT_SUV!r} (float) and outputs {list(OUTPUTS)}; "
                f"got inputs {sorted(inputs)}, outputs {sorted(outputs)}"
            )
        self.input_type = _ORT_TYPES[suv.type]
        self.input_shape = list(suv.shape)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        feed = {contract.INPUT_SUV: np.ascontiguousarray(batch, dtype=self.input_type)}
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), feed), strict=True))


class _OpenVinoEngine(Engine):
    def __init__(self, choice: EngineChoice, path: Path, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        names = {n for o in model.outputs for n in o.get_names()}
        if (
            contract.INPUT_SUV not in {n for i in model.inputs for n in i.get_names()}
            or not set(OUTPUTS) <= names
        ):
            raise ModelError(f"{path}: expected input {contract.INPUT_SUV!r} and outputs {list(OUTPUTS)}")
        self.input_shape = [
            d.get_length() if d.is_static else None
            for d in model.input(contract.INPUT_SUV).get_partial_shape()
        ]
        # bf16 only when asked: on an AMX CPU OpenVINO's default hint would be bf16 for every model.
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if choice.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.choice, self.path, self.version = choice, path, openvino_version() or "?"
        self.providers = ["CPU"]
        self._outputs = {name: self.compiled.output(name) for name in OUTPUTS}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self.request.infer({contract.INPUT_SUV: np.ascontiguousarray(batch, dtype=np.float32)})
        return {name: np.array(result[port], dtype=np.float32) for name, port in self._outputs.items()}


def create_engine(
    model_path: str | Path,
    choice: EngineChoice,
    *,
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Engine:
    """Load ``model_path`` (a version's ``model.onnx``) with ``choice``; int8 loads ``model.int8.onnx``.

    ``threads`` = intra-op threads (0: the engine's default, one per physical core); ``providers`` =
    ONNX Runtime execution providers (OpenVINO always runs on the CPU). Raises :class:`ConfigError`
    when the choice cannot run here (:func:`unavailable` says why) and :class:`ModelError` when the
    graph does not load.
    """
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    why = unavailable(choice, model_path)
    if why:
        raise ConfigError(f"{choice}: {why}")
    path = model_file(model_path, choice.precision)
    try:
        if choice.engine == "openvino":
            return _OpenVinoEngine(choice, path, threads)
        return _OrtEngine(choice, path, threads, providers)
    except (ConfigError, ModelError):
        raise
    except Exception as exc:  # the engines raise their own exception types for unloadable graphs
        raise ModelError(f"{choice.engine} cannot load {path}: {exc}") from None


# -- auto -------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """How one candidate did on the reference cases."""

    choice: EngineChoice
    accepted: bool
    reason: str
    p50_ms: float | None = None
    max_abs_diff: float | None = None
    flips: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "choice": str(self.choice)}


@dataclass
class AutoDecision:
    """What ``auto`` chose, why, and every candidate's figures."""

    choice: EngineChoice
    reason: str
    threshold: float
    tolerance: float
    n_cases: int
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.choice.to_dict(),
            "reason": self.reason,
            "threshold": self.threshold,
            "tolerance": self.tolerance,
            "n_cases": self.n_cases,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def guard(
    probabilities: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> tuple[int, float, str | None]:
    """(decision flips, max |difference|, why rejected or None) of ``probabilities`` against float32's.

    A decision is ``p >= threshold`` (the client's rule); a flip is any case where it differs.
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if p.shape != ref.shape:
        raise ValueError(f"{p.size} probabilities for {ref.size} reference cases")
    flipped = np.flatnonzero((p >= threshold) != (ref >= threshold))
    diff = float(np.max(np.abs(p - ref))) if p.size else 0.0
    if flipped.size:
        i = int(flipped[0])
        return (
            int(flipped.size),
            diff,
            f"{flipped.size} decision flip(s) at threshold {threshold:.4g} (case {i}: float32 "
            f"{ref[i]:.4f}, this {p[i]:.4f})",
        )
    if not diff <= tolerance:  # also catches NaN
        return 0, diff, f"max probability difference {diff:.2g} > tolerance {tolerance:g}"
    return 0, diff, None


class _Slower(Exception):
    """A candidate already slower than one that passed."""


def _clearly_slower(seconds: float, best_ms: float) -> bool:
    """1.5x and 50 ms slower than the best passing p50: timing noise never prunes a candidate."""
    return seconds * 1000 > 1.5 * best_ms and seconds * 1000 - best_ms > 50


def choose_auto(
    inputs: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    candidates: Sequence[tuple[EngineChoice, Callable[[np.ndarray], np.ndarray] | str]],
    *,
    tolerance: float = PROBABILITY_TOLERANCE,
    repeats: int = 1,
) -> AutoDecision:
    """The fastest candidate whose decisions on every case equal float32's, within ``tolerance``.

    ``inputs`` ``[N, 1, X, Y, Z]`` reference cases, ``reference`` their float32 probabilities ``[N]``,
    ``threshold`` the operating point. Each candidate is a callable mapping one ``[1, 1, X, Y, Z]`` case
    to its probability, or a string saying why it cannot run here. Latency = median per case over
    ``repeats`` passes after one warm-up call; a candidate clearly slower than one that already passed
    stops there (it can never be chosen). When no reduced precision passes, the fastest passing
    float32 candidate is kept; when nothing passes, :data:`REFERENCE`.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 5 or inputs.shape[0] == 0:
        raise ValueError(f"reference inputs must be [N>0, 1, X, Y, Z], got {inputs.shape}")
    results: list[Candidate] = []
    for choice, run in candidates:
        if isinstance(run, str):
            results.append(Candidate(choice, False, run))
            continue
        best = min((c.p50_ms for c in results if c.accepted and c.p50_ms is not None), default=None)
        try:
            run(inputs[:1])  # warm-up: allocation, kernel selection
            times, probs = [], []
            for rep in range(max(1, repeats)):
                for x in inputs:
                    t0 = time.perf_counter()
                    p = float(np.asarray(run(x[None])).reshape(-1)[0])
                    times.append(time.perf_counter() - t0)
                    if rep == 0:
                        probs.append(p)
                    if best is not None and _clearly_slower(times[-1], best):
                        raise _Slower(
                            f"slower than a passing candidate ({1000 * times[-1]:.0f} vs {best:.0f} ms)"
                        )
        except _Slower as slow:  # never the fastest: not worth the remaining cases (load time matters)
            results.append(Candidate(choice, False, str(slow), 1000 * statistics.median(times)))
            continue
        except Exception as exc:  # a candidate that fails is skipped, never fatal
            results.append(Candidate(choice, False, f"failed: {type(exc).__name__}: {exc}"[:200]))
            continue
        flips, diff, why = guard(np.array(probs), reference, threshold, tolerance)
        results.append(
            Candidate(choice, why is None, why or "passed", 1000 * statistics.median(times), diff, flips)
        )
    passed = sorted((c for c in results if c.accepted), key=lambda c: c.p50_ms or 0.0)
    # Ran but failed the guard (a decision flip, too large a difference) vs could not run here.
    rejected = [c for c in results if not c.accepted and c.flips is not None]
    unusable = [c for c in results if not c.accepted and c.p50_ms is None]
    slower = [c for c in results if not c.accepted and c.p50_ms is not None and c.flips is None]
    why_not = "; ".join(f"{c.choice}: {c.reason}" for c in rejected)
    common = {"threshold": threshold, "tolerance": tolerance, "n_cases": len(inputs), "candidates": results}
    if not passed:
        why = f"no candidate passed ({why_not or 'none ran'}): the float32 graph"
        return AutoDecision(REFERENCE, why, **common)
    best = passed[0]
    text = (
        f"{best.choice}: fastest passing candidate ({best.p50_ms:.0f} ms/scan, max probability "
        f"difference {best.max_abs_diff:.2g}, no decision flip on {len(inputs)} reference cases)"
    )
    if best.choice.precision == "fp32" and any(c.choice.precision != "fp32" for c in rejected):
        text = f"fell back to float32, {text}; rejected: {why_not}"
    elif rejected:
        text += f"; rejected: {why_not}"
    if slower:
        text += f"; slower: {', '.join(str(c.choice) for c in slower)}"
    if unusable:
        text += f"; not available here: {', '.join(str(c.choice) for c in unusable)}"
    return AutoDecision(best.choice, text, **common)


def expand(engine: str, precision: str) -> list[EngineChoice]:
    """Every choice ``engine``/``precision`` names (``auto`` = all), float32 first."""
    check_names(engine, precision)
    engines = ENGINES if engine == AUTO else (engine,)
    precisions = PRECISIONS if precision == AUTO else (precision,)
    return [
        EngineChoice(e, p) for p in precisions for e in engines if not (e == "onnxruntime" and p == "bf16")
    ]


def resolve(
    model_path: str | Path,
    engine: str,
    precision: str,
    *,
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    inputs: np.ndarray | Callable[[], np.ndarray] | None = None,
    reference: np.ndarray | None = None,
    threshold: float = 0.5,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> tuple[Engine, AutoDecision | None]:
    """The engine to run: ``engine``/``precision`` as given, or chosen by :func:`choose_auto`.

    With ``auto`` in either, ``inputs`` are the reference cases (or a callable producing them, called
    only then) and ``reference`` their float32 probabilities (computed with the float32 ONNX Runtime
    graph when None). Only the best engine so far stays loaded while candidates are measured.
    """
    check_names(engine, precision)
    if AUTO not in (engine, precision):
        return create_engine(
            model_path, EngineChoice(engine, precision), threads=threads, providers=providers
        ), None
    cases = inputs() if callable(inputs) else inputs
    if cases is None:
        raise ConfigError("auto needs reference inputs to measure the candidates on")
    cases = np.asarray(cases, dtype=np.float32)
    if reference is None:
        ref_engine = create_engine(model_path, REFERENCE, threads=threads)
        reference = np.concatenate([ref_engine.probabilities(x[None]) for x in cases])
        del ref_engine
    loaded: dict[EngineChoice, Engine] = {}

    def runner(choice: EngineChoice) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            if choice not in loaded:
                loaded.clear()  # one candidate in memory at a time (each holds every fold's weights)
                loaded[choice] = create_engine(model_path, choice, threads=threads, providers=providers)
            return loaded[choice].probabilities(x)

        return run

    candidates: list[tuple[EngineChoice, Callable[[np.ndarray], np.ndarray] | str]] = []
    for choice in expand(engine, precision):
        why = unavailable(choice, model_path)
        candidates.append((choice, why if why else runner(choice)))
    decision = choose_auto(cases, reference, threshold, candidates, tolerance=tolerance)
    log.info("auto engine: %s", decision.reason)
    chosen = loaded.get(decision.choice) or create_engine(
        model_path, decision.choice, threads=threads, providers=providers
    )
    return chosen, decision


def resolve_version(
    version_dir: str | Path,
    engine: str,
    precision: str,
    *,
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    model_file_name: str = "model.onnx",
    tolerance: float = PROBABILITY_TOLERANCE,
) -> tuple[Engine, AutoDecision | None]:
    """:func:`resolve` on an exported version; ``auto`` measures on its reference cases.

    The reference cases (``reference_cases.npz``, :mod:`gliodeploy.export.reference`) hold scans
    closest to the operating point first, with the float32 (PyTorch) probabilities and the threshold:
    exactly the guard's inputs. A version without them cannot use ``auto``.
    """
    version_dir = Path(version_dir)
    cases = None
    if AUTO in (engine, precision):
        from gliodeploy.export.reference import load_reference_cases

        try:
            cases = load_reference_cases(version_dir)
        except ModelError as exc:
            raise ConfigError(f"auto engine/precision: {exc}; or choose the engine and precision") from None
    return resolve(
        version_dir / model_file_name,
        engine,
        precision,
        threads=threads,
        providers=providers,
        inputs=None if cases is None else cases.inputs(),
        reference=None if cases is None else cases.probability,
        threshold=0.5 if cases is None else cases.threshold,
        tolerance=tolerance,
    )


def export_int8(model_path: str | Path, plans: dict[str, Any], profile: Any) -> dict[str, Any] | None:
    """At export: write ``model.int8.onnx`` beside ``model_path`` when the profile's CPU precision is
    ``int8`` or ``auto``, calibrated on the run's training scans; return its facts for the model card.

    ``auto`` without reachable training scans (e.g. a run moved without its data) exports no int8
    graph, says so, and ``auto`` then chooses among the others; ``int8`` asked explicitly fails.
    """
    if getattr(profile, "cpu_precision", "fp32") not in ("int8", AUTO) or profile.format != "onnx":
        return None
    from gliodeploy.runtime.quantize import calibration_scans, quantize_int8

    try:
        scans = calibration_scans(plans, n=profile.int8_calibration_scans)
    except ConfigError as exc:
        if profile.cpu_precision == "int8":
            raise
        log.warning("no int8 graph: %s", exc)
        return {"skipped": str(exc)}
    return quantize_int8(model_path, model_file(model_path, "int8"), scans)
