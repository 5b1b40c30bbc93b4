"""Experiment configuration: a TOML file with tables ``[model]``, ``[preprocessing]``, ``[training]``,
``[augmentation]`` and ``[data]``. Defaults are the study's settings; unknown keys are errors.

Example::

    name = "cnn3d_aug"
    [model]
    name = "cnn3d"
    [preprocessing]
    preset = "study"          # or spacing = [2, 2, 2], shape = [128, 128, 82], normalization = "minmax"
    [training]
    augmentation = true
    [data]
    manifest = "cohort/manifest.csv"   # relative to the TOML file's folder
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gliodeploy.data.augmentation import AugmentationConfig
from gliodeploy.errors import ConfigError
from gliodeploy.preprocessing.config import PreprocessConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

OPTIMIZERS = ("adam", "sgd")
LOSSES = ("bce", "sce")
CLASS_WEIGHTING = ("none", "balanced")
SELECT_METRICS = ("val_loss", "val_auc")
#: How each fold's model is chosen (see TrainingConfig.validation).
VALIDATION_MODES = ("final", "inner", "study")
SCHEDULERS = ("plateau", "cosine", "constant")


@dataclass(frozen=True)
class ModelSpec:
    """Which architecture to build (``gliodeploy.models.build_model(name, width=..., **kwargs)``)."""

    name: str = "cnn3d"
    width: float | str | None = None  # e.g. "quarter" or 0.25; None: the study's size
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained_path: str | None = None  # safetensors/state dict loaded before training

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for plans.json (``pretrained_path`` is a training detail, kept for provenance)."""
        return {
            "name": self.name,
            "width": self.width,
            "kwargs": dict(self.kwargs),
            "pretrained_path": self.pretrained_path,
        }


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings (study defaults: Adam 1e-4, wd 1e-3, 150 epochs, batch 10, 10 folds)."""

    folds: int = 10
    epochs: int = 150
    batch_size: int = 10
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-3
    scheduler_patience: int = 15
    scheduler_factor: float = 0.5
    loss: str = "bce"
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    sce_log_clamp: float = -4.0  # A in Wang et al. 2019: log(0) replaced by A in the reverse CE
    class_weighting: str = "none"
    augmentation: bool = True
    num_workers: int = 0
    amp: bool = True  # used on CUDA only
    channels_last: bool = True  # used on CUDA only
    seed: int = 0
    #: Which model's predictions become the out-of-fold (OOF) validation, and what the plateau
    #: scheduler watches. ``"final"`` (default, nnU-Net): the last epoch of the fixed schedule; the
    #: plateau scheduler watches the training loss; the validation fold only ever gets predicted.
    #: ``"inner"``: ``inner_val_fraction`` of each fold's training patients (stratified label x
    #: scanner) is held out for early stopping (best ``select_metric``) and the plateau scheduler.
    #: ``"study"``: the epoch with the best ``select_metric`` on the validation fold itself, which
    #: also drives the scheduler - the 2024 study's protocol, reported as optimistic (selected on the
    #: very patients it is scored on).
    validation: str = "final"
    scheduler: str = "plateau"  # plateau (ReduceLROnPlateau), cosine (to 0 over the epochs) or constant
    warmup_epochs: int = 0  # linear learning-rate warm-up (cosine and constant only)
    inner_val_fraction: float = 0.15
    select_metric: str = "val_loss"  # inner / study modes: the loss or AUC of the selection patients
    max_steps_per_epoch: int | None = None  # cap for tests/demos
    suspect_window: int = 10  # last N epochs averaged to flag suspect labels
    cache_workers: int = 0  # processes for preprocessing the cohort
    tensorboard: bool = False  # also log epoch scalars to fold_<k>/tensorboard (tensorboardX)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; ``source`` is the TOML file it came from (None if built in code)."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig.study)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    manifest: Path | None = None
    source: Path | None = None

    def replace_training(self, **changes: Any) -> ExperimentConfig:
        """A copy with some training settings changed (validated)."""
        training = dataclasses.replace(self.training, **changes)
        _validate_training(training, "training")
        return dataclasses.replace(self, training=training)


TOP_KEYS = {"name", "model", "preprocessing", "training", "augmentation", "data"}


def _check_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _validate_training(t: TrainingConfig, where: str) -> None:
    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{where}.{name} {why} (got {getattr(t, name)!r})")

    ints = (
        "folds",
        "epochs",
        "batch_size",
        "scheduler_patience",
        "num_workers",
        "seed",
        "suspect_window",
        "cache_workers",
        "warmup_epochs",
    )
    for name in ints:
        v = getattr(t, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(name, "must be an integer")
    for name in (
        "lr",
        "weight_decay",
        "momentum",
        "scheduler_factor",
        "sce_alpha",
        "sce_beta",
        "sce_log_clamp",
        "inner_val_fraction",
    ):
        v = getattr(t, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(name, "must be a number")
    for name in ("augmentation", "amp", "channels_last", "tensorboard"):
        if not isinstance(getattr(t, name), bool):
            raise bad(name, "must be true or false")
    if t.folds < 2:
        raise bad("folds", "must be >= 2")
    if t.epochs < 1 or t.batch_size < 1 or t.suspect_window < 1:
        raise ConfigError(f"{where}: epochs, batch_size and suspect_window must be >= 1")
    if t.num_workers < 0 or t.cache_workers < 0:
        raise ConfigError(f"{where}: num_workers and cache_workers must be >= 0")
    if t.lr <= 0 or t.weight_decay < 0:
        raise ConfigError(f"{where}: lr must be > 0 and weight_decay >= 0")
    if not 0 < t.scheduler_factor < 1:
        raise bad("scheduler_factor", "must be in (0, 1)")
    if not 0.05 <= t.inner_val_fraction <= 0.5:
        raise bad("inner_val_fraction", "must be in [0.05, 0.5]")
    if not 0 <= t.warmup_epochs < t.epochs:
        raise bad("warmup_epochs", "must be >= 0 and smaller than epochs")
    if t.warmup_epochs and t.scheduler == "plateau":
        raise ConfigError(
            f"{where}.warmup_epochs applies to scheduler = 'cosine' or 'constant', not 'plateau'"
        )
    if t.sce_log_clamp >= 0:
        raise bad("sce_log_clamp", "must be negative (it replaces log(0))")
    for name, choices in (
        ("optimizer", OPTIMIZERS),
        ("loss", LOSSES),
        ("class_weighting", CLASS_WEIGHTING),
        ("select_metric", SELECT_METRICS),
        ("validation", VALIDATION_MODES),
        ("scheduler", SCHEDULERS),
    ):
        if getattr(t, name) not in choices:
            raise bad(name, f"must be one of {', '.join(choices)}")
    m = t.max_steps_per_epoch
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
        raise bad("max_steps_per_epoch", "must be a positive integer")


def _preprocessing(table: dict[str, Any], where: str) -> PreprocessConfig:
    table = dict(table)
    preset = table.pop("preset", "study")
    if not isinstance(preset, str):
        raise ConfigError(f"{where}.preset must be a string")
    try:
        return PreprocessConfig.preset(preset, **table)
    except TypeError as exc:  # unknown override name
        known = sorted(f.name for f in dataclasses.fields(PreprocessConfig))
        raise ConfigError(f"{where}: {exc} (known keys: preset, {', '.join(known)})") from exc


def parse_experiment(doc: dict[str, Any], *, source: Path | None = None) -> ExperimentConfig:
    """Validate a parsed TOML document; relative paths are taken against ``source``'s folder."""
    where = str(source) if source else "experiment"
    _check_keys(doc, TOP_KEYS, where)
    name = doc.get("name", source.stem if source else None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    base = source.parent if source else Path.cwd()

    m = _table(doc, "model", where)
    _check_keys(m, {f.name for f in dataclasses.fields(ModelSpec)}, f"{where} [model]")
    width = m.get("width")
    if width is not None and not (
        isinstance(width, str)
        or (not isinstance(width, bool) and isinstance(width, (int, float)) and width > 0)
    ):
        raise ConfigError(f"{where} [model].width must be a name or a positive number (got {width!r})")
    if not isinstance(m.get("kwargs", {}), dict):
        raise ConfigError(f"{where} [model].kwargs must be a table")
    pretrained = m.get("pretrained_path") or None
    if pretrained is not None:
        p = Path(pretrained)
        pretrained = str(p if p.is_absolute() else (base / p).resolve())
    model = ModelSpec(
        name=str(m.get("name", "cnn3d")),
        width=width,
        kwargs=dict(m.get("kwargs", {})),
        pretrained_path=pretrained,
    )

    pre = _preprocessing(_table(doc, "preprocessing", where), f"{where} [preprocessing]")

    t = _table(doc, "training", where)
    _check_keys(t, {f.name for f in dataclasses.fields(TrainingConfig)}, f"{where} [training]")
    training = TrainingConfig(**t)
    _validate_training(training, f"{where} [training]")

    aug = AugmentationConfig.from_dict(_table(doc, "augmentation", where), source=f"{where} [augmentation]")

    d = _table(doc, "data", where)
    _check_keys(d, {"manifest"}, f"{where} [data]")
    manifest = d.get("manifest")
    if manifest is not None:
        manifest = Path(manifest)
        manifest = manifest if manifest.is_absolute() else (base / manifest)
    return ExperimentConfig(
        name=name,
        model=model,
        preprocessing=pre,
        training=training,
        augmentation=aug,
        manifest=manifest,
        source=source,
    )


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read an experiment TOML file (ConfigError for a missing file, bad TOML or bad values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_experiment(doc, source=path.resolve())
