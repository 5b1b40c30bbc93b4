"""Triton python-backend model: native-grid SUV volume -> model grid, server side.

Runs exactly ``gliodeploy.preprocessing.preprocess`` (the code the client runs locally), with the
preprocessing configuration stored by the export in ``<version>/preprocessing.json``. One native
volume per request (``max_batch_size: 0``): native scans have different shapes, so they cannot be
stacked. Inputs/outputs are named in :mod:`gliodeploy.contract`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk
import triton_python_backend_utils as pb_utils

from gliodeploy import contract
from gliodeploy.errors import GliodeployError
from gliodeploy.preprocessing import PreprocessConfig, preprocess


def _input(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise GliodeployError(f"missing input tensor {name!r}")
    return tensor.as_numpy()


class TritonPythonModel:
    """Resample, mask, centre and crop one native SUV volume onto the model grid."""

    def initialize(self, args: dict) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "preprocessing.json"), encoding="utf-8") as fh:
            self.cfg = PreprocessConfig.from_dict(json.load(fh))

    def _one(self, request) -> np.ndarray:
        volume = _input(request, contract.INPUT_NATIVE_VOLUME)
        spacing = _input(request, contract.INPUT_SPACING).astype(float).reshape(-1)
        origin = _input(request, contract.INPUT_ORIGIN).astype(float).reshape(-1)
        direction = _input(request, contract.INPUT_DIRECTION).astype(float).reshape(-1)
        if volume.ndim != 3 or spacing.size != 3 or origin.size != 3 or direction.size != 9:
            raise GliodeployError(
                f"expected {contract.INPUT_NATIVE_VOLUME} [Z,Y,X], spacing [3], origin [3], "
                f"direction [9]; got "
                f"{volume.shape}, {spacing.shape}, {origin.shape}, {direction.shape}"
            )
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(direction.tolist())
        grid = preprocess(image, self.cfg).array
        return np.ascontiguousarray(grid[np.newaxis, np.newaxis], dtype=np.float32)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                out = pb_utils.Tensor(contract.INPUT_SUV, self._one(request))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # a bad scan fails its own request, not the server
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"geometry: {exc}")))
        return responses
