"""Atomic writes: all or nothing, and the final file has ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gliodeploy.utils.atomic import atomic_path, atomic_write, remove_stale_temporaries


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_content_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    old_umask = os.umask(0o022)
    try:
        atomic_write(target, "new")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new"
    assert _mode(target) == 0o644  # not mkstemp's 0600: others (a Triton container user) can read it
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_failure_leaves_target_untouched_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model_best.safetensors"
    target.write_bytes(b"finished weights")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"finished weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model_best.safetensors"]


def test_atomic_directory_appears_whole_and_never_replaces_one(tmp_path: Path) -> None:
    target = tmp_path / "1"
    old_umask = os.umask(0o022)
    try:
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "model.onnx").write_bytes(b"graph")
            assert not target.exists()
    finally:
        os.umask(old_umask)
    assert (target / "model.onnx").read_bytes() == b"graph"
    assert _mode(target) == 0o755
    with pytest.raises(FileExistsError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "model.onnx").write_bytes(b"other")
    assert (target / "model.onnx").read_bytes() == b"graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_replace_dir_swaps_only_a_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "distilled"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True, replace_dir=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted while writing")
    assert (target / "model.safetensors").read_bytes() == b"old"
    with atomic_path(target, is_dir=True, replace_dir=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
    assert (target / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distilled"]


def test_remove_stale_temporaries_keeps_every_real_file(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text("{}\n")
    (tmp_path / ".hidden_config").write_text("keep")
    (tmp_path / ".log.jsonl.tmp-abc.jsonl").write_text("torn")
    (tmp_path / ".model.tmp-xyz").mkdir()
    (tmp_path / ".distilled.old-123").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_config", "log.jsonl"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
