"""docker/Dockerfile.train (never built in CI: no Docker daemon here) is checked by reading: the project's
pinned torch, shared memory for DataLoader workers, the UID of bind-mounted run folders."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "docker" / "Dockerfile.train").read_text()


def test_training_image_installs_the_pinned_torch() -> None:
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pin, "constraints.txt pins torch"
    assert (
        "-c constraints.txt" in DOCKERFILE and "COPY pyproject.toml README.md constraints.txt" in DOCKERFILE
    )
    assert f"startswith('{pin.group(1)}')" in DOCKERFILE  # the build fails if pip picked another torch
    assert "pytorch/pytorch" not in DOCKERFILE  # a base image's own torch would differ from the pin


def test_training_shared_memory_and_run_folder_owner_are_set() -> None:
    train = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["train"]
    assert train["shm_size"] == "8g" and "--shm-size=8g" in DOCKERFILE
    assert set(train["build"]["args"]) == {"UID", "GID"} and "USER ${UID}:${GID}" in DOCKERFILE
    assert "--shm-size" in (ROOT / "docker" / "README.md").read_text()
