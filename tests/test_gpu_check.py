"""The prepared GPU check (bench/gpu_check.py): its CPU smoke run works and BENCHMARKS.md says when it
has not been run on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run_benchmarks  # noqa: E402


def test_gpu_check_smoke_runs_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert doc["quick"] is True and doc["name"] == "gpu_check"
    captions = [t["caption"] for t in doc["tables"]]
    assert len(captions) == 3
    providers, fp16, training = doc["tables"]
    # Without a GPU the providers table falls back to the CPU as a reference, and says so.
    assert providers["rows"] and all("CPU" in r[0] for r in providers["rows"])
    assert [r[1] for r in providers["rows"]] == [1, 2]
    assert any("not run" in n and "TensorRT" in n for n in fp16["notes"])
    assert [r[0] for r in training["rows"]] == ["cnn3d", "lesionnet"]
    assert any("unverified" in v for v in doc["verdicts"])
    assert (tmp_path / "gpu_check.md").read_text(encoding="utf-8").startswith("## GPU check")


def test_gpu_section_states_not_run(tmp_path: Path) -> None:
    assert "has **not been run**" in run_benchmarks.gpu_section(tmp_path)
    # A smoke result is not GPU evidence: still "not run".
    (tmp_path / "gpu_check.json").write_text(json.dumps({"quick": True}), encoding="utf-8")
    assert "not been run" in run_benchmarks.gpu_section(tmp_path)
    assert "GPU check: not run" in run_benchmarks.render(tmp_path)


def test_gpu_section_renders_a_gpu_run(tmp_path: Path) -> None:
    doc = {
        "name": "gpu_check",
        "title": "GPU check: ONNX Runtime CUDA / TensorRT",
        "tables": [
            {
                "caption": "providers",
                "columns": ["configuration", "p50 ms"],
                "rows": [["ORT CUDA fp32", 7.5]],
                "notes": [],
            }
        ],
        "verdicts": ["Ensemble batch-1 p50 model-bound: 7.5 ms"],
        "quick": False,
        "command": "bash bench/gpu_check.sh",
        "date": "2026-12-01",
        "duration_s": 300.0,
        "loadavg_before": [0.1, 0.1, 0.1],
        "loadavg_after": [0.2, 0.2, 0.2],
        "machine": {
            "cpu": "NVIDIA H200",
            "usable_cores": 16,
            "ram_gib": "?",
            "torch": "2.11",
            "torch_threads": "-",
            "onnxruntime": "1.30",
            "ort_intra_op_threads": "-",
            "numpy": "2",
        },
    }
    (tmp_path / "gpu_check.json").write_text(json.dumps(doc), encoding="utf-8")
    text = run_benchmarks.gpu_section(tmp_path)
    assert "NVIDIA H200" in text and "| ORT CUDA fp32 | 7.5 |" in text
