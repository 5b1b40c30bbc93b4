"""Post-training int8 quantisation of the exported ensemble graph, calibrated on training scans.

:func:`quantize_int8` writes ``model.int8.onnx`` beside ``model.onnx``: ONNX Runtime's static
quantisation in QDQ form (int8 per-channel symmetric weights, uint8 activations, min/max calibration),
restricted to convolutions and matrix products so the in-graph intensity normalisation stays float32.
A QDQ graph runs in ONNX Runtime and OpenVINO alike (OpenVINO turns each Q/DQ pair into its own int8
kernels), so one file serves both engines. ONNX Runtime's quantiser ships with onnxruntime: no extra
dependency. :func:`calibration_scans` reads the run's preprocessed training scans (its cache, else the
scans of its manifest). Needs numpy, onnxruntime and (for calibration_scans) SimpleITK; never torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.errors import ConfigError

log = logging.getLogger(__name__)

#: Operators quantised: the compute; normalisation, pooling and the fold mean stay float32.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> dict[str, Any]:
    """Quantise ``fp32_path`` to ``out_path`` calibrated on ``calibration`` ``[N, 1, X, Y, Z]`` SUV.

    Returns facts for the model card: method, number of calibration scans, quantised nodes.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    cases = np.asarray(calibration, dtype=np.float32)
    if cases.ndim != 5 or cases.shape[0] == 0:
        raise ConfigError(f"int8 calibration needs [N>0, 1, X, Y, Z] scans, got shape {cases.shape}")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(cases)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {contract.INPUT_SUV: x[None]}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's advice lines go to the root logger
    try:
        quantize_static(
            str(fp32_path),
            str(out_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Ranges reduced every few scans: full-size activations of all scans never sit in memory.
            extra_options={"CalibMaxIntermediateOutputs": _flush_every(len(cases))},
        )
    finally:
        root.setLevel(level)
    import onnx

    ops = [n.op_type for n in onnx.load(str(out_path), load_external_data=False).graph.node]
    return {
        "method": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, min/max",
        "quantized_ops": list(QUANTIZED_OPS),
        "calibration_scans": int(cases.shape[0]),
        "quantize_linear_nodes": ops.count("QuantizeLinear"),
    }


def _flush_every(n: int) -> int:
    """Smallest k >= 2 not dividing ``n``: ONNX Runtime's calibrator fails ("No data is collected") when
    its last flush leaves nothing, i.e. when k divides the number of scans."""
    k = 2
    while n % k == 0:
        k += 1
    return k


def calibration_scans(
    plans: dict[str, Any], *, n: int = 16, cache_root: str | Path | None = None
) -> np.ndarray:
    """Up to ``n`` preprocessed training scans of a run (``plans.json``), ``[n, 1, X, Y, Z]``.

    The run's own preprocessing cache (``<manifest folder>/cache`` unless ``cache_root``), filled for
    any scan missing there exactly as training fills it. Training scans only, labels alternating so
    that both classes are calibrated.
    """
    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.preprocessing import PreprocessConfig

    manifest = plans.get("manifest")
    if not manifest or not Path(manifest).is_file():
        raise ConfigError(
            f"int8 calibration needs the run's training scans, but its manifest {manifest!r} is not "
            "readable here; export with cpu_precision fp32/bf16, or where the run's data is"
        )
    cfg = PreprocessConfig.from_dict(plans["preprocessing"])
    rows = read_manifest(manifest, require_train=True).train
    by_label = [[r for r in rows if r.label == k] for k in (0, 1)]
    picked = [r for pair in zip(*by_label, strict=False) for r in pair][:n] or rows[:n]
    root = Path(cache_root) if cache_root else Path(manifest).parent / "cache"
    entries = build_cache(picked, cfg, root, progress=False)
    log.info("int8 calibration on %d training scans of %s", len(picked), manifest)
    arrays = [load_cached(entries[r.subject]).array for r in picked]
    return np.stack(arrays)[:, np.newaxis].astype(np.float32)
