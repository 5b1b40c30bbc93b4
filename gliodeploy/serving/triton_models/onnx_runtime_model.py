"""Triton python-backend model: the exported ONNX ensemble run by ONNX Runtime on CPU.

Used by the ``local`` configuration of ``gliodeploy_ensemble`` (the Triton binary bundled with
nvidia-pytriton has the python backend only). All requests of a dynamic batch are concatenated
and run as one ONNX Runtime call, so Triton's batching really batches the computation.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """ONNX Runtime session over ``<repository>/<model>/<version>/model.onnx``."""

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
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            path,
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = np.ascontiguousarray(np.concatenate(arrays, axis=0), dtype=np.float32)
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        responses = []
        start = 0
        for n in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + n]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self.session = None
