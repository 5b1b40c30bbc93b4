"""A registry model exports to ONNX with a dynamic batch and ONNX Runtime matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliodeploy.models import build_model
from gliodeploy.preprocessing import PreprocessConfig

TINY = PreprocessConfig.tiny()


@pytest.mark.parametrize("name", ["cnn3d", "squeezenet"])
def test_onnx_export_dynamic_batch_matches_onnxruntime(tmp_path, name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(name, preprocessing=TINY, **({"width": "quarter"} if name == "cnn3d" else {})).eval()
    example = torch.rand(2, 1, *TINY.shape) * 3.0
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["suv"],
        output_names=["logit"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):  # batch sizes other than the export example's
        x = torch.rand(n, 1, *TINY.shape) * 3.0
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["logit"], {"suv": x.numpy()})
        assert got.shape == (n, 1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
