"""Inference engines for the exported ensemble graph: ONNX Runtime and OpenVINO, float32/bf16/int8.

:mod:`gliodeploy.runtime.engines` is the one place where an engine is created; the offline predictor
(``gliodeploy predict``) and the served python-backend model both use it. Never imports torch; the
engines' own packages are imported only when an engine of that kind is created.
"""
