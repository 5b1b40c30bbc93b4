"""Export a torch module to ONNX (or TorchScript) and prove the file computes the same thing.

ONNX goes through ``torch.onnx.export(dynamo=True)`` at opset 18 with only the batch dimension
dynamic: some architectures (ACS convolutions) freeze size-dependent branches at export time, so
the spatial shape must stay the exported one. Every export is followed by a parity check that runs
the written file in ONNX Runtime (or ``torch.jit.load``) against eager PyTorch; above the tolerance,
or when a decision at the operating point differs from PyTorch's, the export fails with
:class:`~gliodeploy.errors.ModelError` and the file is not kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gliodeploy import contract
from gliodeploy.errors import InputError, ModelError
from gliodeploy.export.reference import FP16_TOLERANCE, FP32_TOLERANCE, decisions

if TYPE_CHECKING:
    import onnx

OPSET = 18
#: Output names of the exported ensemble, in forward() order.
OUTPUT_NAMES: tuple[str, str, str] = (
    contract.OUTPUT_PROBABILITY,
    contract.OUTPUT_FOLD_PROBABILITIES,
    contract.OUTPUT_LOGIT,
)
#: Above this many parameter bytes the weights go to an external ``<file>.data`` (protobuf's hard
#: limit is 2 GiB; staying well under it leaves room for the graph itself).
EXTERNAL_DATA_THRESHOLD = 1_500_000_000
# Default parity tolerances (max absolute difference on probabilities/logits): FP32_TOLERANCE and
# FP16_TOLERANCE (gliodeploy.export.reference), shared with `gliodeploy verify --server`.
#: Which runtime reads an ONNX file: rows ``(max IR version, max ai.onnx opset, first ONNX Runtime
#: release reading both, earliest Triton container confirmed to ship such a release)``, ascending.
#: ONNX Runtime columns: its compatibility table (1.14 = ONNX 1.13: IR 8, opset 18; 1.15: IR 9,
#: opset 19; 1.17: opset 20; 1.18: IR 10, opset 21). Triton column, conservative: 23.04 builds the
#: onnxruntime backend with ONNX Runtime 1.14.1 (onnxruntime_backend README), 24.05 ships 1.18; an
#: earlier container may do, none older than the one named is promised.
RUNTIME_SUPPORT: tuple[tuple[int, int, str, str], ...] = (
    (8, 18, "1.14", "23.04"),
    (9, 19, "1.15", "24.05"),
    (9, 20, "1.17", "24.05"),
    (10, 21, "1.18", "24.05"),
)


@dataclass(frozen=True)
class ParityReport:
    """Result of comparing an exported file with eager PyTorch on the same inputs."""

    max_abs_diff: float
    per_output: dict[str, float]
    n_inputs: int
    tolerance: float
    #: Threshold at which every decision was checked equal to PyTorch's (None: not checked).
    threshold: float | None = None
    #: PyTorch's outputs on the parity inputs (the reference cases are taken from them).
    expected: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored in the model card)."""
        return {
            "max_abs_diff": self.max_abs_diff,
            "per_output": self.per_output,
            "n_inputs": self.n_inputs,
            "tolerance": self.tolerance,
            "decision_threshold": self.threshold,
            "decisions_equal": self.threshold is not None,
        }


def parameter_bytes(module: nn.Module) -> int:
    """Bytes taken by the parameters and buffers of ``module``."""
    tensors = [*module.parameters(), *module.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _check_inputs(inputs: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    arr = np.asarray(inputs, dtype=np.float32)
    if arr.ndim != 5 or arr.shape[1] != 1 or tuple(arr.shape[2:]) != tuple(input_shape):
        raise InputError(
            f"parity inputs have shape {tuple(arr.shape)}; "
            f"expected [B, 1, {', '.join(map(str, input_shape))}]"
        )
    if not np.isfinite(arr).all():
        raise InputError("parity inputs contain NaN or infinite values")
    return arr


def torch_outputs(module: nn.Module, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``module`` eagerly (eval, no grad) and name its outputs like the exported graph."""
    module.eval()
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(inputs)))
    return {name: t.detach().cpu().numpy() for name, t in zip(OUTPUT_NAMES, out, strict=True)}


def check_decisions(
    expected: dict[str, np.ndarray], got: dict[str, np.ndarray], threshold: float, what: str
) -> None:
    """Refuse a graph whose decision at ``threshold`` differs from PyTorch's on any parity input.

    Probabilities within the tolerance can still sit on both sides of the threshold: the served
    decision is what a clinician reads, so any flip fails the export, naming each flipped input.
    """
    want = decisions(expected[contract.OUTPUT_PROBABILITY], threshold)
    have = decisions(got[contract.OUTPUT_PROBABILITY], threshold)
    flipped = np.flatnonzero(want != have)
    if flipped.size == 0:
        return
    p_want = expected[contract.OUTPUT_PROBABILITY].reshape(-1)
    p_have = got[contract.OUTPUT_PROBABILITY].reshape(-1)
    names = contract.LABEL_NAMES
    detail = "; ".join(
        f"scan {i}: PyTorch {p_want[i]:.7f} ({names[want[i]]}), exported {p_have[i]:.7f} ({names[have[i]]})"
        for i in flipped
    )
    raise ModelError(
        f"{what} changes the decision at the operating point (threshold {threshold:.6g}) on "
        f"{flipped.size} of {want.size} parity scans: {detail}; nothing was published"
    )


def _compare(
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    n: int,
    tol: float,
    what: str,
    threshold: float | None = None,
) -> ParityReport:
    per_output = {}
    for name, ref in expected.items():
        if got[name].shape != ref.shape:
            raise ModelError(
                f"{what}: output {name!r} has shape {got[name].shape}, PyTorch gives {ref.shape}"
            )
        per_output[name] = float(np.max(np.abs(got[name].astype(np.float64) - ref.astype(np.float64))))
    worst = max(per_output.values())
    if not np.isfinite(worst) or worst > tol:
        raise ModelError(
            f"{what} does not match PyTorch: max abs difference {worst:.3g} > tolerance {tol:g} "
            f"({', '.join(f'{k}={v:.3g}' for k, v in per_output.items())})"
        )
    if threshold is not None:
        check_decisions(expected, got, threshold, what)
    return ParityReport(
        max_abs_diff=worst,
        per_output=per_output,
        n_inputs=n,
        tolerance=tol,
        threshold=threshold,
        expected=expected,
    )


def onnx_parity(
    onnx_path: str | os.PathLike[str],
    module: nn.Module,
    inputs: np.ndarray,
    *,
    tolerance: float,
    threshold: float | None = None,
) -> ParityReport:
    """Run ``onnx_path`` in ONNX Runtime (CPU) and eager ``module`` on ``inputs``; raise above ``tolerance``
    or, with a ``threshold``, when any decision at it differs from PyTorch's.

    Inputs are fed one at a time *and* as one batch, so a graph whose batch dimension was frozen at
    export fails here rather than in Triton.
    """
    import onnxruntime as ort

    arr = _check_inputs(inputs, module_input_shape(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = torch_outputs(module, arr)
    batched = dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {contract.INPUT_SUV: arr}), strict=True))
    single = [sess.run(list(OUTPUT_NAMES), {contract.INPUT_SUV: arr[i : i + 1]}) for i in range(len(arr))]
    one_by_one = {name: np.concatenate([s[k] for s in single]) for k, name in enumerate(OUTPUT_NAMES)}
    what = f"ONNX model {onnx_path}"
    report = _compare(expected, batched, len(arr), tolerance, f"{what} (batched)", threshold)
    _compare(expected, one_by_one, len(arr), tolerance, f"{what} (batch of 1)", threshold)
    return report


def module_input_shape(onnx_path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Spatial shape ``(X, Y, Z)`` of the ``suv`` input of an exported ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name == contract.INPUT_SUV:
            return tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[2:])
    raise ModelError(f"{onnx_path} has no input named {contract.INPUT_SUV!r}")


def minimal_ir_version(model: onnx.ModelProto) -> int:
    """Lowest ONNX IR version the opsets imported by ``model`` (a ``ModelProto``) allow.

    torch writes the newest IR version its onnx package knows (10 for torch 2.13), which only ONNX
    Runtime >= 1.18 reads although opset 18 needs IR 8: stamping the minimum keeps older Triton
    containers able to load the graph. Model-local functions need IR 8 as well.
    """
    import onnx.helper

    ir = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return max(ir, 8) if len(model.functions) else ir


def runtime_requirements(onnx_path: str | os.PathLike[str]) -> dict[str, object]:
    """IR version and opset of an ONNX file with the oldest ONNX Runtime and Triton that read it.

    From :data:`RUNTIME_SUPPORT`; ``None`` for a runtime when the file is newer than the table knows.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    row = next((r for r in RUNTIME_SUPPORT if model.ir_version <= r[0] and opset <= r[1]), None)
    return {
        "onnx_ir_version": int(model.ir_version),
        "onnx_opset": int(opset),
        "min_onnxruntime": row[2] if row else None,
        "min_triton": row[3] if row else None,
    }


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int],
    parity_inputs: np.ndarray,
    fp16: bool = False,
    tolerance: float | None = None,
    external_data: bool | None = None,
    threshold: float | None = None,
) -> ParityReport:
    """Export ``module`` (input ``suv`` ``[B,1,*input_shape]``) to ``path`` and check it.

    ``external_data=None`` stores weights beside the graph (``<path>.data``) only when they exceed
    :data:`EXTERNAL_DATA_THRESHOLD`. ``fp16=True`` converts weights and activations to float16 but
    keeps float32 inputs/outputs (ONNX Runtime's converter), for GPUs; the tolerance is then
    :data:`FP16_TOLERANCE`. The file carries the lowest IR version its opset allows
    (:func:`minimal_ir_version`). With ``threshold`` (the operating point), every decision on the
    parity inputs must equal PyTorch's too. The file appears at ``path`` only after the checks passed.
    """
    import onnx

    path = Path(path)
    tol = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    arr = _check_inputs(parity_inputs, input_shape)
    use_external = (
        parameter_bytes(module) > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    )
    module.eval()
    # Batch 2 in the example: a size-1 dim would be specialised by torch.export.
    example = torch.zeros((2, 1, *input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp:
        tmp_onnx = Path(tmp) / path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[contract.INPUT_SUV],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"suv": {0: batch}},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        if program is None:  # pragma: no cover - dynamo=True always returns an ONNXProgram
            raise ModelError("torch.onnx.export returned no program")
        model = program.model_proto
        if fp16:
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
            # The converter appends the input/output casts at the end of the node list.
            wrapped = OnnxModel(model)
            wrapped.topological_sort()
            model = wrapped.model
        model.ir_version = minimal_ir_version(model)
        if use_external:  # weights beside the graph; Triton and ONNX Runtime read them from the same folder
            onnx.save_model(
                model,
                str(tmp_onnx),
                save_as_external_data=True,
                location=f"{path.name}.data",
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(tmp_onnx))
        onnx.checker.check_model(str(tmp_onnx))
        report = onnx_parity(tmp_onnx, module, arr, tolerance=tol, threshold=threshold)
        for produced in sorted(Path(tmp).iterdir()):
            os.replace(produced, path.parent / produced.name)
    return report


def export_torchscript(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int],
    parity_inputs: np.ndarray,
    tolerance: float = FP32_TOLERANCE,
    threshold: float | None = None,
) -> ParityReport:
    """Trace ``module`` with ``torch.jit.trace`` to ``path`` and check it against eager PyTorch
    (probabilities within ``tolerance``; with ``threshold``, the same decisions).

    TorchScript is deprecated upstream (torch warns on use) and kept only for Triton's PyTorch
    (libtorch) backend; ONNX is the default. Tracing keeps the batch dimension dynamic for these
    convolutional graphs; the parity check runs the traced file at batch 1 and at the full batch.
    """
    path = Path(path)
    arr = _check_inputs(parity_inputs, input_shape)
    module.eval()
    example = torch.zeros((2, 1, *input_shape), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
        try:
            tmp_file = tmp / path.name
            torch.jit.save(traced, str(tmp_file))
            loaded = torch.jit.load(str(tmp_file))
            expected = torch_outputs(module, arr)
            with torch.no_grad():
                got_batch = loaded(torch.from_numpy(arr))
                got_single = [loaded(torch.from_numpy(arr[i : i + 1])) for i in range(len(arr))]
            batched = {n: t.numpy() for n, t in zip(OUTPUT_NAMES, got_batch, strict=True)}
            single = {
                n: np.concatenate([s[k].numpy() for s in got_single]) for k, n in enumerate(OUTPUT_NAMES)
            }
            what = f"TorchScript model {path}"
            report = _compare(expected, batched, len(arr), tolerance, f"{what} (batched)", threshold)
            _compare(expected, single, len(arr), tolerance, f"{what} (batch of 1)", threshold)
            os.replace(tmp_file, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return report
