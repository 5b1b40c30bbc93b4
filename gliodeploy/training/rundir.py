"""The run directory written by ``gliodeploy train`` and read by evaluate, explain and export.

Layout (docs/ARCHITECTURE.md)::

    RUN_DIR/experiment.toml  plans.json  splits.json  oof_predictions.csv  suspect_labels.csv
    RUN_DIR/fold_<k>/model.safetensors  checkpoint_last.pt  log.jsonl  done.json  [inner_split.json]
                     val_loss_per_patient.csv  val_predictions.csv  suspect_labels.csv  done.json
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from gliodeploy.errors import ModelError
from gliodeploy.preprocessing.config import PreprocessConfig

OOF_COLUMNS = ("subject", "fold", "probability", "label", "scanner", "site")


class RunDir:
    """Paths and readers of one training run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def experiment_toml(self) -> Path:
        return self.path / "experiment.toml"

    @property
    def plans_json(self) -> Path:
        return self.path / "plans.json"

    @property
    def splits_json(self) -> Path:
        return self.path / "splits.json"

    @property
    def oof_csv(self) -> Path:
        return self.path / "oof_predictions.csv"

    @property
    def suspect_csv(self) -> Path:
        return self.path / "suspect_labels.csv"

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}"

    def weights(self, k: int) -> Path:
        """The fold's model: the final epoch, or the selected one (``done.json`` says which)."""
        return self.fold_dir(k) / "model.safetensors"

    def weights_to_load(self, k: int) -> Path:
        """:meth:`weights`, or ``model_best.safetensors`` of runs written before the validation modes."""
        legacy = self.fold_dir(k) / "model_best.safetensors"
        return legacy if legacy.is_file() and not self.weights(k).is_file() else self.weights(k)

    def checkpoint_last(self, k: int) -> Path:
        return self.fold_dir(k) / "checkpoint_last.pt"

    def log(self, k: int) -> Path:
        return self.fold_dir(k) / "log.jsonl"

    def val_losses(self, k: int) -> Path:
        return self.fold_dir(k) / "val_loss_per_patient.csv"

    def val_predictions(self, k: int) -> Path:
        return self.fold_dir(k) / "val_predictions.csv"

    def fold_suspects(self, k: int) -> Path:
        return self.fold_dir(k) / "suspect_labels.csv"

    def done(self, k: int) -> Path:
        return self.fold_dir(k) / "done.json"

    # -- readers --------------------------------------------------------------------------------
    def plans(self) -> dict[str, Any]:
        """plans.json as a dict (ModelError if missing or corrupt)."""
        try:
            return json.loads(self.plans_json.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"{self.path} is not a training run: no plans.json") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"corrupt {self.plans_json}: {exc}") from exc

    @property
    def n_folds(self) -> int:
        return int(self.plans()["folds"])

    def preprocessing(self) -> PreprocessConfig:
        """The preprocessing the models were trained with."""
        return PreprocessConfig.from_dict(self.plans()["preprocessing"])

    def is_fold_done(self, k: int) -> bool:
        return self.done(k).is_file()

    def done_folds(self) -> list[int]:
        return [k for k in range(self.n_folds) if self.is_fold_done(k)]

    def is_complete(self) -> bool:
        """Every fold finished and the out-of-fold predictions assembled."""
        return self.plans_json.is_file() and len(self.done_folds()) == self.n_folds and self.oof_csv.is_file()

    def build_model(self):  # -> torch.nn.Module (torch imported lazily)
        """A fresh (untrained) model as described in plans.json."""
        return build_from_spec(self.plans()["model"], self.preprocessing())

    def load_fold_models(self, device: str = "cpu") -> list:
        """Each fold's model (see :meth:`weights`), in eval mode, in fold order."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        n = self.n_folds
        missing = [k for k in range(n) if not self.weights_to_load(k).is_file() or not self.is_fold_done(k)]
        if missing:
            raise ModelError(
                f"{self.path}: fold(s) {missing} not finished (no done.json / model.safetensors)"
            )
        models = []
        for k in range(n):
            model = self.build_model()
            try:
                model.load_state_dict(load_file(str(self.weights_to_load(k)), device=device))
            except (RuntimeError, OSError, SafetensorError) as exc:  # corrupt/truncated weights file
                raise ModelError(f"cannot load {self.weights_to_load(k)}: {exc}") from exc
            models.append(model.to(device).eval())
        return models

    def validation_mode(self) -> str:
        """``final``, ``inner`` or ``study`` (runs from before the modes selected on the fold: ``study``)."""
        v = self.plans().get("validation")
        return str(v.get("mode", "study")) if isinstance(v, dict) else "study"

    def oof_predictions(self) -> list[dict[str, Any]]:
        """Rows of oof_predictions.csv with typed fields (fold int, probability float, label int)."""
        if not self.oof_csv.is_file():
            raise ModelError(f"{self.path}: no oof_predictions.csv (are all folds finished?)")
        with open(self.oof_csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return [
            {**r, "fold": int(r["fold"]), "probability": float(r["probability"]), "label": int(r["label"])}
            for r in rows
        ]

    def fold_log(self, k: int) -> list[dict[str, Any]]:
        """Per-epoch records of fold ``k``."""
        if not self.log(k).is_file():
            return []
        return [json.loads(line) for line in self.log(k).read_text(encoding="utf-8").splitlines() if line]


def build_from_spec(spec: dict[str, Any], preprocessing: PreprocessConfig):
    """``gliodeploy.models.build_model`` from a plans.json model spec."""
    from gliodeploy.models import build_model

    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("width") is not None:
        kwargs["width"] = spec["width"]
    return build_model(spec["name"], preprocessing=preprocessing, **kwargs)
