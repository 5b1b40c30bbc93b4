"""Shared pytest setup: deterministic seeds and small thread counts (CI has 2 cores)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)


# ---- serving fixtures (export/serving owner) -----------------------------------------------------
# tiny_run: a 2-fold run directory of a tiny cnn3d on the 32x32x21 test grid, in the layout
# `gliodeploy train` writes (plans.json, fold_<k>/model.safetensors, done.json), with
# fixed-seed weights; tiny_repository: its export; triton_server: the real bundled Triton on it.
TINY_FOLDS = 2


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished 2-fold tiny cnn3d run directory (fixed-seed weights)."""
    import json

    import torch
    from safetensors.torch import save_file

    from gliodeploy.contract import LABEL_NAMES
    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig

    run = tmp_path_factory.mktemp("tiny_run")
    cfg = PreprocessConfig.tiny()
    plans = {
        "experiment": "tiny-serving-fixture",
        "preprocessing": cfg.to_dict(),
        "model": {"name": "cnn3d", "width": "quarter", "kwargs": {}, "pretrained_path": None},
        "folds": TINY_FOLDS,
        "label_names": list(LABEL_NAMES),
        "positive_label": 1,
    }
    (run / "plans.json").write_text(json.dumps(plans, indent=2), encoding="utf-8")
    for k in range(TINY_FOLDS):
        torch.manual_seed(100 + k)
        model = build_model("cnn3d", preprocessing=cfg, width="quarter")
        (run / f"fold_{k}").mkdir()
        save_file(model.state_dict(), str(run / f"fold_{k}" / "model.safetensors"))
        (run / f"fold_{k}" / "done.json").write_text(json.dumps({"fold": k}), encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def tiny_repository(tiny_run, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_run`` exported (version 1) to a fresh Triton model repository."""
    from gliodeploy.export.pipeline import export_run

    repo = tmp_path_factory.mktemp("tiny_repo") / "model_repository"
    export_run(tiny_run, repo, threshold=0.5)  # never evaluated: the threshold is explicit
    return repo


@pytest.fixture(scope="module")
def repo(tiny_repository, tmp_path_factory: pytest.TempPathFactory):
    """A module's own copy of ``tiny_repository``, without the bytecode a python-backend server may have
    left in it (verification rightly refuses ``__pycache__`` beside ``model.py``)."""
    import shutil

    copy = tmp_path_factory.mktemp("repo_copy") / "model_repository"
    shutil.copytree(tiny_repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="session")
def triton_server(tiny_repository):
    """The real bundled Triton server on ``tiny_repository`` (loopback, free ports)."""
    from gliodeploy.serving import TritonServer

    with TritonServer(tiny_repository, startup_timeout=90) as server:
        yield server
