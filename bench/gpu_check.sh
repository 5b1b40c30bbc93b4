#!/usr/bin/env bash
# The prepared GPU check (issue #12, item 5): ONNX Runtime CUDA / TensorRT at batch 1/8/32 for the
# 10-fold CNN3D ensemble at 128x128x82, TensorRT FP16 against FP32 on reference cases, and a bf16
# AMP training step per architecture. Under 10 minutes on an H100/H200-class GPU.
#
#   bash bench/gpu_check.sh [OUT_DIR] [extra gpu_check.py options, e.g. --onnx F --reference R.npz]
#
# Needs python3 with torch (CUDA) and onnxruntime; the TensorRT/CUDA providers need the
# onnxruntime-gpu wheel (and TensorRT libraries) instead of the CPU onnxruntime. A GPU machine without
# a package index gets the missing pure-Python model libraries as wheels in ./.whl (git-ignored):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl monai==1.6.1
# and, for TensorRT/CUDA providers, onnxruntime-gpu for that machine's CUDA. Sections that cannot run
# there say "not run: <why>" in the result instead of failing the whole check.
#
# Afterwards: copy OUT_DIR/gpu_check.json to bench/results/ and run
#   .venv/bin/python bench/run_benchmarks.py --render
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results/gpu}}"
shift || true
py="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gliodeploy-site .whl/*.whl
    export PYTHONPATH="/tmp/gliodeploy-site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi || echo "nvidia-smi not found: no NVIDIA GPU visible"
# 9.5 min hard stop: the script itself stops starting sections after --budget-s (540 s by default).
exec timeout 570 "$py" bench/gpu_check.py --out "$out" "$@"
