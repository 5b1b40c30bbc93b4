"""Reference cases: a few preprocessed scans with the trained folds' answers, stored in every version.

``gliodeploy export`` writes ``<repo>/gliodeploy_ensemble/<N>/reference_cases.npz`` (compressed, covered
by the version's ``SHA256SUMS`` and the repository manifest like every version file): up to
:data:`REFERENCE_CASES` of the parity scans, the ones closest to the operating point first, with the
per-fold and ensemble probabilities **PyTorch** gave on exactly those inputs and the decision at the
version's threshold. ``gliodeploy verify REPO --server URL`` sends them to a running server (the bundled
one, NVIDIA's container with ONNX Runtime / TensorRT) and fails on a probability more than the tolerance
away from PyTorch's or on any decision flip: how a site accepts a deployment it did not build.

Tolerance (max absolute difference of any probability, ensemble or fold): :data:`FP32_TOLERANCE` (1e-4)
for FP32 graphs on FP32 runtimes, :data:`FP16_TOLERANCE` (2e-2) for FP16 exports; an FP32 graph run by
TensorRT in FP16 (``export/gpu.toml``) needs ``--tolerance 2e-2``; a server that publishes a bf16/int8
CPU engine (``gliodeploy serve --cpu-precision``) is held to the ``auto`` guard's 2e-3 by default. A
decision flip fails whatever the tolerance. Torch-free: the server check runs from the client install.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.errors import ConfigError, ModelError

REFERENCE_FILE = "reference_cases.npz"
#: How many parity scans become reference cases.
REFERENCE_CASES = 4
#: Max |Δp| allowed between the exported graph (or a server) and PyTorch, FP32 and FP16 graphs.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2
_KEYS = ("case", "suv", "probability", "fold_probabilities", "decision", "threshold")


@dataclass(frozen=True)
class ReferenceCases:
    """Stored inputs ``suv`` ``[n, 1, X, Y, Z]`` and PyTorch's outputs on them at ``threshold``."""

    case: tuple[str, ...]
    suv: np.ndarray  # float16 (or float32 when a value does not fit float16); sent as float32
    probability: np.ndarray  # [n] float32
    fold_probabilities: np.ndarray  # [n, K] float32
    decision: np.ndarray  # [n] int8: 1 = recurrence (probability >= threshold)
    threshold: float
    fp16: bool = False  # exported as an FP16 graph: its default tolerance is FP16_TOLERANCE

    @property
    def default_tolerance(self) -> float:
        """The documented tolerance for this export: FP16 graphs get :data:`FP16_TOLERANCE`."""
        return FP16_TOLERANCE if self.fp16 else FP32_TOLERANCE

    def inputs(self) -> np.ndarray:
        """The scans as the model receives them: float32 ``[n, 1, X, Y, Z]``."""
        return self.suv.astype(np.float32)

    def summary(self) -> list[dict[str, Any]]:
        """Per case: id, PyTorch probability, decision, distance to the threshold (model card)."""
        return [
            {
                "case": name,
                "probability": float(p),
                "decision": int(d),
                "margin": float(abs(p - self.threshold)),
            }
            for name, p, d in zip(self.case, self.probability, self.decision, strict=True)
        ]


def storable(inputs: np.ndarray) -> np.ndarray:
    """``inputs`` rounded to what a reference file stores (float16 when every value fits), as float32.

    Export runs its parity check on these rounded scans, so the stored PyTorch outputs are exactly the
    answers to the stored inputs while the file stays half the size.
    """
    arr = np.asarray(inputs, dtype=np.float32)
    with np.errstate(over="ignore"):
        half = arr.astype(np.float16)
    return half.astype(np.float32) if np.isfinite(half).all() else arr


def decisions(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The served decision rule (the client's): 1 = recurrence when ``probability >= threshold``."""
    return (np.asarray(probability, dtype=np.float64).reshape(-1) >= float(threshold)).astype(np.int8)


def select_cases(probability: np.ndarray, threshold: float, n: int = REFERENCE_CASES) -> list[int]:
    """Indices of up to ``n`` cases, closest to the threshold first.

    Cases nearer than :data:`FP32_TOLERANCE` are skipped while others remain: a correct FP32 runtime
    could legitimately land on the other side of the threshold.
    """
    p = np.asarray(probability, dtype=np.float64).reshape(-1)
    order = sorted(range(p.size), key=lambda i: abs(p[i] - threshold))
    clear = [i for i in order if abs(p[i] - threshold) >= FP32_TOLERANCE]
    chosen = clear[:n] if clear else order[:n]
    return sorted(chosen)


def write_reference_cases(
    folder: Path,
    inputs: np.ndarray,
    expected: Mapping[str, np.ndarray],
    threshold: float,
    *,
    fp16: bool = False,
) -> ReferenceCases:
    """Write :data:`REFERENCE_FILE` into a (staging) version folder from the parity scans and PyTorch's
    outputs on them (``expected``: the graph's output names)."""
    prob = np.asarray(expected[contract.OUTPUT_PROBABILITY], dtype=np.float32).reshape(-1)
    folds = np.asarray(expected[contract.OUTPUT_FOLD_PROBABILITIES], dtype=np.float32)
    idx = select_cases(prob, threshold)
    half = np.asarray(inputs, dtype=np.float32)[idx].astype(np.float16)
    exact = np.isfinite(half).all() and np.array_equal(half.astype(np.float32), inputs[idx])
    cases = ReferenceCases(
        case=tuple(f"parity-{i}" for i in idx),
        suv=half if exact else np.asarray(inputs, dtype=np.float32)[idx],
        probability=prob[idx],
        fold_probabilities=folds[idx],
        decision=decisions(prob[idx], threshold),
        threshold=float(threshold),
        fp16=fp16,
    )
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        case=np.array(cases.case),
        suv=cases.suv,
        probability=cases.probability,
        fold_probabilities=cases.fold_probabilities,
        decision=cases.decision,
        threshold=np.float64(cases.threshold),
        fp16=np.bool_(fp16),
    )
    (folder / REFERENCE_FILE).write_bytes(buffer.getvalue())
    return cases


def load_reference_cases(version_dir: Path) -> ReferenceCases:
    """Read a version's reference cases; :class:`ModelError` if absent or malformed."""
    path = version_dir / REFERENCE_FILE
    if not path.is_file():
        raise ModelError(
            f"{version_dir} has no {REFERENCE_FILE} (exported by an older gliodeploy): re-export the run "
            "to add reference cases"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise ModelError(f"{path}: missing array(s) {', '.join(missing)}")
            cases = ReferenceCases(
                case=tuple(str(c) for c in z["case"]),
                suv=z["suv"],
                probability=z["probability"].astype(np.float32),
                fold_probabilities=z["fold_probabilities"].astype(np.float32),
                decision=z["decision"].astype(np.int8),
                threshold=float(z["threshold"]),
                fp16=bool(z["fp16"]) if "fp16" in z.files else False,
            )
    except (OSError, ValueError, EOFError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    n = len(cases.case)
    if (
        cases.suv.ndim != 5
        or cases.suv.shape[:2] != (n, 1)
        or cases.probability.shape != (n,)
        or cases.fold_probabilities.ndim != 2
        or cases.fold_probabilities.shape[0] != n
        or cases.decision.shape != (n,)
    ):
        raise ModelError(f"{path}: arrays of inconsistent shapes")
    return cases


# ---- comparing a runtime's answers with the reference --------------------------------------------
@dataclass(frozen=True)
class CaseResult:
    """One reference case answered by a runtime."""

    case: str
    expected: float
    got: float
    fold_max_abs_diff: float
    max_abs_diff: float  # over the ensemble probability and every fold
    expected_decision: int
    got_decision: int
    margin: float  # |expected - threshold|
    ok: bool

    @property
    def flipped(self) -> bool:
        """The decision at the operating point differs from PyTorch's."""
        return self.expected_decision != self.got_decision

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**self.__dict__, "flipped": self.flipped}


def compare_case(
    cases: ReferenceCases, i: int, probability: float, fold_probabilities: Any, tolerance: float
) -> CaseResult:
    """Case ``i`` of ``cases`` against a runtime's ensemble and fold probabilities."""
    want_folds = cases.fold_probabilities[i].astype(np.float64)
    got_folds = np.asarray(fold_probabilities, dtype=np.float64).reshape(-1)
    expected = float(cases.probability[i])
    if got_folds.shape != want_folds.shape:
        fold_diff = math.inf  # another fold count: another model
    else:
        fold_diff = float(np.max(np.abs(got_folds - want_folds)))
    worst = max(abs(float(probability) - expected), fold_diff)
    got_decision = int(float(probability) >= cases.threshold)
    want_decision = int(cases.decision[i])
    return CaseResult(
        case=cases.case[i],
        expected=expected,
        got=float(probability),
        fold_max_abs_diff=fold_diff,
        max_abs_diff=worst,
        expected_decision=want_decision,
        got_decision=got_decision,
        margin=abs(expected - cases.threshold),
        ok=bool(worst <= tolerance and got_decision == want_decision),
    )


def check_tolerance(tolerance: float | None, cases: ReferenceCases) -> float:
    """``tolerance`` (None: the export's default), refused unless a finite number in (0, 1)."""
    if tolerance is None:
        return cases.default_tolerance
    if not (math.isfinite(tolerance) and 0.0 < tolerance < 1.0):
        raise ConfigError(f"--tolerance must be in (0, 1), got {tolerance}")
    return float(tolerance)


def results_table(results: list[CaseResult], tolerance: float) -> str:
    """Plain text table of the cases (one line each), for people."""
    names = contract.LABEL_NAMES
    head = (
        f"{'case':<12} {'margin':>8} {'expected p':>11} {'served p':>11} {'max |dp|':>9}  "
        f"{'status':<12} decision"
    )
    lines = [head]
    for r in results:
        decision = names[r.expected_decision]
        if r.flipped:
            decision = f"FLIPPED: {names[r.expected_decision]} -> {names[r.got_decision]}"
        status = "ok" if r.ok else ("FAIL" if r.flipped else f"FAIL > {tolerance:g}")
        lines.append(
            f"{r.case:<12} {r.margin:>8.4f} {r.expected:>11.6f} {r.got:>11.6f} {r.max_abs_diff:>9.2g}  "
            f"{status:<12} {decision}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ServerCheck:
    """What ``gliodeploy verify REPO --server URL`` found: the served model against REPO's reference."""

    server: str
    version: int
    tolerance: float
    results: list[CaseResult]
    problems: list[str]  # the server publishes another model, threshold or checksum than REPO's

    @property
    def ok(self) -> bool:
        """Every case within the tolerance, no decision flip, the server publishes REPO's model."""
        return not self.problems and all(r.ok for r in self.results)

    def max_abs_diff(self) -> float:
        """Worst |Δp| over every case, ensemble and folds."""
        return max((r.max_abs_diff for r in self.results), default=0.0)

    def summary(self) -> str:
        """One line: what was checked and the verdict."""
        flips = sum(r.flipped for r in self.results)
        over = sum(r.max_abs_diff > self.tolerance for r in self.results)
        head = (
            f"{len(self.results)} reference cases of {contract.ENSEMBLE_MODEL} v{self.version} on "
            f"{self.server}: max |dp| {self.max_abs_diff():.2g} (tolerance {self.tolerance:g}), "
            f"{flips} decision flip(s)"
        )
        if self.ok:
            return f"{head}: OK"
        why = [*self.problems]
        if over:
            why.append(f"{over} case(s) above the tolerance")
        if flips:
            why.append(f"{flips} decision(s) differ from PyTorch's at the operating point")
        return f"{head}: the served model is not the exported one ({'; '.join(why)})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``)."""
        return {
            "server": self.server,
            "model": contract.ENSEMBLE_MODEL,
            "version": self.version,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "max_abs_diff": self.max_abs_diff(),
            "decision_flips": sum(r.flipped for r in self.results),
            "problems": self.problems,
            "cases": [r.to_dict() for r in self.results],
        }


def check_server(
    version_dir: Path, version: int, client: Any, *, tolerance: float | None = None
) -> ServerCheck:
    """Send ``version_dir``'s reference cases to the server behind ``client`` (a
    :class:`~gliodeploy.client.api.GliodeployClient` asking for ``version``) and compare.

    Also compares what the server publishes with the version's own files: threshold and, when the
    export published it, the model checksum (another checksum = another export is served).
    """
    from gliodeploy.export.integrity import model_checksum

    cases = load_reference_cases(version_dir)
    tol = check_tolerance(tolerance, cases)  # a bad --tolerance is said before any request
    info = client.info()
    precision = (info.cpu_runtime or {}).get("precision")
    if tolerance is None and precision in ("bf16", "int8"):
        # The server runs a reduced-precision CPU engine: hold it to the bound its `auto` guard accepted
        # (gliodeploy.runtime.engines), not to the float32 one it can never meet.
        from gliodeploy.runtime.engines import PROBABILITY_TOLERANCE

        tol = max(tol, PROBABILITY_TOLERANCE)
    problems = []
    if info.threshold != cases.threshold:
        problems.append(
            f"the server's threshold {info.threshold:.6g} is not the version's {cases.threshold:.6g}"
        )
    local = model_checksum(version_dir, version)
    if info.checksum and info.checksum.get("sha256sums_sha256") != local["sha256sums_sha256"]:
        problems.append(
            f"the server publishes model checksum {str(info.checksum.get('sha256sums_sha256'))[:12]}..., "
            f"version {version} here has {local['sha256sums_sha256'][:12]}..."
        )
    results = []
    for i, array in enumerate(cases.inputs()):
        pred = client.predict_volume(array[0], source=cases.case[i])
        results.append(compare_case(cases, i, pred.probability, pred.fold_probs, tol))
    return ServerCheck(str(client.endpoint.url), version, tol, results, problems)
