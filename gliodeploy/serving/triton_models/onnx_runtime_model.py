"""Triton python-backend model: the exported ensemble on CPU, with ONNX Runtime or OpenVINO.

Used by the ``local`` configuration of ``gliodeploy_ensemble`` (the Triton binary bundled with
nvidia-pytriton has the python backend only). The engine and precision come from the configuration
parameter ``gliodeploy_cpu_runtime`` and are created by :mod:`gliodeploy.runtime.engines`, the code
``gliodeploy predict`` uses too; ``auto`` is resolved here by measurement on the version's reference
cases. All requests of a dynamic batch are concatenated and run as one call, so Triton's batching
really batches the computation.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from gliodeploy import contract
from gliodeploy.runtime.engines import resolve_version


class TritonPythonModel:
    """One engine over ``<repository>/<model>/<version>/model.onnx`` (or its int8 twin)."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_file = params.get("onnx_file", "model.onnx")
        root = os.path.realpath(version_dir)
        path = os.path.realpath(os.path.join(version_dir, onnx_file))
        # `gliodeploy verify` refuses this too; the model refuses it even on a server started without it.
        if os.path.isabs(onnx_file) or path == root or os.path.commonpath([root, path]) != root:
            raise ValueError(f"onnx_file {onnx_file!r} is not a file inside the version folder {root}")
        runtime = json.loads(params.get(contract.PARAM_CPU_RUNTIME) or "{}")
        self.engine, decision = resolve_version(
            root,
            runtime.get("engine", "onnxruntime"),
            runtime.get("precision", "fp32"),
            threads=int(params.get("intra_op_thread_count", "0")),
            model_file_name=os.path.basename(path),
        )
        logger = pb_utils.Logger
        logger.log_info(f"gliodeploy cpu runtime: {self.engine.describe()}")
        if decision is not None:
            logger.log_info(f"gliodeploy cpu runtime auto: {decision.reason}")
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = np.ascontiguousarray(np.concatenate(arrays, axis=0), dtype=np.float32)
        outputs = self.engine.run(batch)
        responses = []
        start = 0
        for n in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start : start + n]))
                for name in self.output_names
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self.engine = None
