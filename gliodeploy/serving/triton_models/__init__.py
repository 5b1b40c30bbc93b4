"""Python-backend model files copied into the Triton repository as ``<version>/model.py``.

They run inside Triton's python-backend stub (``import triton_python_backend_utils``), never in
gliodeploy's own process; tests exercise them through a real server.
"""

from __future__ import annotations

from pathlib import Path

#: Runs ``model.onnx`` of its version folder with ONNX Runtime (gliodeploy_ensemble, ``local`` config).
ONNX_RUNTIME_MODEL = Path(__file__).with_name("onnx_runtime_model.py")
#: Runs gliodeploy.preprocessing.preprocess on a native-grid volume (gliodeploy_geometry).
GEOMETRY_MODEL = Path(__file__).with_name("geometry_model.py")
