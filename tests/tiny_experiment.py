"""One tiny experiment config for every test that runs `gliodeploy train` (imported by the tests).

A 2-fold quarter-width CNN3D on the 8 mm tiny grid, a couple of short epochs: seconds on 2 CPU cores.
Tests override only what they are about (``training={"epochs": 3}``...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_EXPERIMENT: dict[str, dict[str, Any]] = {
    "model": {"name": "cnn3d", "width": "quarter"},
    "preprocessing": {"preset": "tiny"},
    "training": {
        "folds": 2,
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "augmentation": False,
        "max_steps_per_epoch": 2,
    },
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def write_tiny_experiment(path: Path, name: str = "tiny", **sections: dict[str, Any]) -> Path:
    """Write the tiny experiment TOML to ``path``; ``sections`` update model/preprocessing/training/data."""
    lines = [f"name = {_toml_value(name)}"]
    for section in ("model", "preprocessing", "training", "data"):
        values = {**TINY_EXPERIMENT.get(section, {}), **sections.pop(section, {})}
        if values:
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(v)}" for key, v in values.items()]
    if sections:
        raise ValueError(f"unknown experiment sections: {sorted(sections)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
