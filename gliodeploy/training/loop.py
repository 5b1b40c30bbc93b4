"""Cross-validated training: prepare a run directory, train folds (resumable), assemble OOF predictions.

Reproducibility on CPU: every epoch reseeds the global torch generator and the shuffling generator
from ``(seed, fold, epoch)`` and augmentation is seeded per sample (see gliodeploy.data.dataset), so
a run interrupted after any epoch and resumed from ``checkpoint_last.pt`` (model, optimiser,
scheduler, AMP scaler, history, RNG states) ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from gliodeploy.contract import LABEL_NAMES
from gliodeploy.data.augmentation import Augmenter
from gliodeploy.data.cache import build_cache
from gliodeploy.data.dataset import CachedVolumeDataset, sample_seed
from gliodeploy.data.manifest import Manifest, ManifestRow, read_manifest
from gliodeploy.data.splits import Split, load_or_create_splits, make_inner_split
from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.training.config import ExperimentConfig
from gliodeploy.training.losses import build_loss
from gliodeploy.training.rundir import OOF_COLUMNS, RunDir, build_from_spec
from gliodeploy.utils.atomic import atomic_path, atomic_write, remove_stale_temporaries

#: Called after each finished epoch (checkpoint already saved): ``(fold, epoch, record)``.
EpochCallback = Callable[[int, int, dict[str, Any]], None]
#: Only for the per-epoch ``val_acc`` monitoring column; the served operating point is chosen by
#: ``gliodeploy evaluate`` on the honest OOF predictions (gliodeploy.evaluation.operating_point).
MONITOR_THRESHOLD = 0.5

#: What each validation mode's OOF predictions are, in words (plans.json, done.json, the report).
SELECTION_TEXT = {
    "final": "final epoch of a fixed schedule (no selection on the validation fold)",
    "inner": "best epoch on an inner validation split of the training folds (validation fold unseen)",
    "study": "best epoch on the validation fold itself (model selected on these patients: optimistic)",
}


@dataclass
class PreparedRun:
    """Everything a fold needs: config, run directory, manifest, splits and cache entries."""

    cfg: ExperimentConfig
    run: RunDir
    manifest: Manifest
    splits: list[Split]
    entries: dict[str, Path]

    @property
    def rows(self) -> dict[str, ManifestRow]:
        return {r.subject: r for r in self.manifest.train}


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or auto")
    return torch.device(device)


def _plans(cfg: ExperimentConfig, manifest: Manifest) -> dict[str, Any]:
    return {
        "experiment": cfg.name,
        "preprocessing": cfg.preprocessing.to_dict(),
        "preprocessing_fingerprint": cfg.preprocessing.fingerprint(),
        "model": cfg.model.to_dict(),
        "folds": cfg.training.folds,
        "label_names": list(LABEL_NAMES),
        "positive_label": 1,
        "validation": {"mode": cfg.training.validation, "selection": SELECTION_TEXT[cfg.training.validation]},
        "input": {"name": "suv", "layout": "[B, 1, X, Y, Z]", "units": "SUVbw, brain-masked, not normalised"},
        "training": asdict(cfg.training),
        "augmentation": cfg.augmentation.to_dict(),
        "manifest": str(manifest.path),
    }


def prepare_run(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> PreparedRun:
    """Validate the manifest, write experiment.toml/plans.json/splits.json and fill the cache."""
    if cfg.manifest is None:
        raise ConfigError(f"{cfg.source or cfg.name}: no manifest (set [data].manifest or pass --manifest)")
    manifest = read_manifest(cfg.manifest, n_folds=cfg.training.folds)
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    source_text = cfg.source.read_text(encoding="utf-8") if cfg.source else f'name = "{cfg.name}"\n'
    if run.experiment_toml.is_file() and run.experiment_toml.read_text(encoding="utf-8") != source_text:
        raise ConfigError(
            f"{run.path} was trained with another experiment.toml; use a new --out or --force to start over"
        )
    atomic_write(run.experiment_toml, source_text)
    plans = _plans(cfg, manifest)
    if run.plans_json.is_file():
        old = run.plans()
        for key in ("preprocessing", "model", "folds", "validation"):
            if old.get(key) != plans[key]:
                raise ConfigError(f"{run.plans_json}: '{key}' differs from this experiment; use --force")
    atomic_write(run.plans_json, json.dumps(plans, indent=2) + "\n")
    splits = load_or_create_splits(run.splits_json, manifest.train, cfg.training.folds, cfg.training.seed)
    root = Path(cache_root) if cache_root else manifest.path.parent / "cache"
    entries = build_cache(
        manifest.train, cfg.preprocessing, root, workers=cfg.training.cache_workers, progress=progress
    )
    return PreparedRun(cfg=cfg, run=run, manifest=manifest, splits=splits, entries=entries)


# -- one fold --------------------------------------------------------------------------------------
def _fold_seed(seed: int, fold: int, epoch: int) -> int:
    """Seed of one fold's epoch; epoch -1 / -2 name the augmentation stream / the initialisation."""
    return sample_seed(seed, fold + 1, epoch + 2)


def _rng_state() -> dict[str, Any]:
    # Plain tensors/ints only, so torch.load(weights_only=True) can read it back.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pos_weight(labels: list[int], mode: str) -> float | None:
    if mode == "none":
        return None
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    return n_neg / max(n_pos, 1)


def _make_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The experiment's model; ``pretrained_path`` (e.g. 2D ResNet-18 weights for ACS) is handed to
    the registry at training time only, never stored as a requirement for loading the run."""
    spec = cfg.model.to_dict()
    if cfg.model.pretrained_path:
        spec["kwargs"] = {**spec["kwargs"], "pretrained_path": cfg.model.pretrained_path}
    return build_from_spec(spec, cfg.preprocessing)


def _optimizer(cfg: ExperimentConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.training
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def _scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The learning-rate schedule, stepped once per epoch (plateau: with the monitored loss)."""
    t = cfg.training
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=t.scheduler_factor, patience=t.scheduler_patience
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, t.epochs, t.warmup_epochs, cosine=t.scheduler == "cosine")
    )


def lr_factor(epoch: int, epochs: int, warmup: int, *, cosine: bool) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): linear warm-up, then constant or cosine to 0.

    Epoch ``e`` of the warm-up trains at ``(e + 1) / (warmup + 1)`` of the base rate; the cosine runs
    over the remaining epochs so the last epoch trains at a small, non-zero rate.
    """
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if not cosine:
        return 1.0
    span = max(1, epochs - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / span))


def _auc(labels: list[int], probs: list[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def flag_suspects(losses: dict[str, list[float]], window: int, k_mad: float = 3.0) -> list[tuple[str, float]]:
    """Subjects whose mean loss over the last ``window`` epochs exceeds median + k * MAD (scaled).

    A patient the model keeps getting confidently wrong while the others fit is a candidate for a
    label error (the study's labels came from three physicians over years).
    """
    means = {s: float(np.mean(v[-window:])) for s, v in losses.items() if v}
    if len(means) < 3:
        return []
    values = list(means.values())
    med = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - med) for v in values)
    if mad <= 0:
        return []
    limit = med + k_mad * mad
    return sorted(((s, m) for s, m in means.items() if m > limit), key=lambda x: -x[1])


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    ds: CachedVolumeDataset,
    device: torch.device,
    batch_size: int,
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits ``[N]`` of ``model`` on every item of ``ds`` (in order, eval mode)."""
    model.eval()
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        out.append(model(x).float().reshape(-1).cpu())
    return torch.cat(out)


def _tensorboard(fold_dir: Path):  # noqa: ANN202 - tensorboardX.SummaryWriter
    """A TensorBoard writer in ``fold_dir/tensorboard`` (tensorboardX: installed with ACSConv, no TF)."""
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(fold_dir / "tensorboard"))


def _evaluate(
    model: torch.nn.Module,
    ds: CachedVolumeDataset,
    criterion: torch.nn.Module,
    device: torch.device,
    batch_size: int,
    channels_last: bool,
) -> tuple[list[float], list[float], float, float | None]:
    """Per-patient losses, probabilities, mean loss and AUC of ``model`` on ``ds``."""
    logits = predict_logits(model, ds, device, batch_size, channels_last)
    each = criterion(logits, torch.tensor(ds.labels, dtype=torch.float32)).tolist()
    probs = torch.sigmoid(logits).tolist()
    return each, probs, float(np.mean(each)), _auc(ds.labels, probs)


def train_fold(
    prep: PreparedRun,
    fold: int,
    *,
    device: torch.device,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train fold ``fold`` (continuing from checkpoint_last.pt if present); return done.json's content.

    The fold's validation patients are predicted every epoch (logged for monitoring); which epoch's
    predictions become the OOF ones, and what the plateau scheduler watches, depends on
    ``training.validation`` (see :class:`~gliodeploy.training.config.TrainingConfig`).
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    cfg, run, t = prep.cfg, prep.run, prep.cfg.training
    split = prep.splits[fold]
    rows = prep.rows
    fold_dir = run.fold_dir(fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    # A fold killed mid-write (SIGKILL, node loss) leaves hidden temporaries beside its files; this
    # process is the fold's only writer, so they are stale and go before the fold continues.
    remove_stale_temporaries(fold_dir)
    on_cuda = device.type == "cuda"
    use_amp, channels_last = t.amp and on_cuda, t.channels_last and on_cuda
    if not on_cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False

    def dataset(subjects: list[str], augment: bool) -> CachedVolumeDataset:
        aug = Augmenter(cfg.preprocessing.shape, cfg.augmentation) if augment else None
        return CachedVolumeDataset(
            [prep.entries[s] for s in subjects],
            [rows[s].label for s in subjects],
            subjects,
            augmenter=aug,
            seed=_fold_seed(t.seed, fold, -1),
        )

    fit_subjects, inner_subjects = list(split["train"]), []
    if t.validation == "inner":
        fit_subjects, inner_subjects = make_inner_split(
            [rows[s] for s in split["train"]], t.inner_val_fraction, sample_seed(t.seed, 1000 + fold, 0)
        )
        atomic_write(
            fold_dir / "inner_split.json",
            json.dumps({"fit": fit_subjects, "inner_val": inner_subjects}, indent=2) + "\n",
        )
    train_ds = dataset(fit_subjects, t.augmentation)
    val_ds = dataset(split["val"], False)
    inner_ds = dataset(inner_subjects, False) if inner_subjects else None
    val_labels = val_ds.labels

    torch.manual_seed(_fold_seed(t.seed, fold, -2))  # model initialisation
    model = _make_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = _optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_kw = {"sce_alpha": t.sce_alpha, "sce_beta": t.sce_beta, "sce_log_clamp": t.sce_log_clamp}
    criterion = build_loss(t.loss, pos_weight=_pos_weight(train_ds.labels, t.class_weighting), **loss_kw)
    val_criterion = build_loss(t.loss, reduction="none", **loss_kw)  # unweighted: comparable per patient

    start, history, per_patient = 0, [], {s: [] for s in split["val"]}
    best: dict[str, Any] = {"metric": None, "epoch": -1, "probabilities": []}
    ckpt_path = run.checkpoint_last(fold)
    if ckpt_path.is_file():
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
        except (RuntimeError, KeyError, OSError, ValueError, pickle.UnpicklingError) as exc:
            # weights_only=True refuses arbitrary pickles (UnpicklingError): say so, never run them.
            raise ModelError(
                f"cannot resume from {ckpt_path}: {exc}; use --force to restart the fold"
            ) from exc
        start, history, per_patient, best = (
            ckpt["epoch"] + 1,
            ckpt["history"],
            ckpt["per_patient"],
            ckpt["best"],
        )
        _set_rng_state(ckpt["rng"])

    bar = tqdm(
        range(start, t.epochs),
        desc=f"fold {fold}",
        unit="epoch",
        initial=start,
        total=t.epochs,
        disable=not progress,
        dynamic_ncols=True,
    )
    tb = _tensorboard(run.fold_dir(fold)) if t.tensorboard else None
    for epoch in bar:
        tic = time.perf_counter()
        epoch_seed = _fold_seed(t.seed, fold, epoch)
        torch.manual_seed(epoch_seed)  # dropout etc.: a function of the epoch, not of the history
        train_ds.set_epoch(epoch)
        loader = DataLoader(
            train_ds,
            batch_size=t.batch_size,
            shuffle=True,
            drop_last=len(train_ds) > t.batch_size,
            num_workers=t.num_workers,
            generator=torch.Generator().manual_seed(epoch_seed),
            pin_memory=on_cuda,
        )
        model.train()
        losses: list[float] = []
        for step, batch in enumerate(loader):
            if t.max_steps_per_epoch is not None and step >= t.max_steps_per_epoch:
                break
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            loss = criterion(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))

        # The validation fold is predicted every epoch for the log and the per-patient losses; only
        # in the study's mode does it choose the epoch or drive the scheduler.
        val_loss_each, probs, val_loss, val_auc = _evaluate(
            model, val_ds, val_criterion, device, t.batch_size, channels_last
        )
        train_loss = float(np.mean(losses)) if losses else None
        record = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auc": val_auc,
            "val_acc": float(
                np.mean((np.asarray(probs) >= MONITOR_THRESHOLD) == np.asarray(val_labels, dtype=bool))
            ),
        }
        if inner_ds is not None:
            _, _, record["inner_loss"], record["inner_auc"] = _evaluate(
                model, inner_ds, val_criterion, device, t.batch_size, channels_last
            )
        record["time"] = round(time.perf_counter() - tic, 3)
        if t.validation == "final":
            monitored = train_loss if train_loss is not None else 0.0
            select_loss, select_auc = None, None
        elif t.validation == "inner":
            monitored = select_loss = record["inner_loss"]
            select_auc = record["inner_auc"]
        else:  # study
            monitored, select_loss, select_auc = val_loss, val_loss, val_auc
        if t.scheduler == "plateau":
            scheduler.step(monitored)
        else:
            scheduler.step()
        history.append(record)
        if tb is not None:
            for key in ("lr", "train_loss", "val_loss", "val_auc", "val_acc", "inner_loss", "inner_auc"):
                if record.get(key) is not None:
                    tb.add_scalar(key, record[key], epoch)
            tb.flush()
        for s, v in zip(split["val"], val_loss_each, strict=True):
            per_patient[s].append(float(v))

        if t.validation == "final":
            best = {"metric": None, "epoch": epoch, "probabilities": probs}  # weights saved after the loop
        else:
            auc = select_auc if select_auc is not None else 0.0
            metric = select_loss if t.select_metric == "val_loss" else -auc
            if best["metric"] is None or metric < best["metric"]:
                best = {"metric": metric, "epoch": epoch, "probabilities": probs}
                state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                with atomic_path(run.weights(fold)) as tmp:
                    save_file(state, str(tmp))

        atomic_write(run.log(fold), "".join(json.dumps(r) + "\n" for r in history))
        _write_csv(
            run.val_losses(fold),
            ["subject", *[f"epoch_{i}" for i in range(epoch + 1)]],
            [[s, *(f"{v:.6g}" for v in per_patient[s])] for s in split["val"]],
        )
        ckpt = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
            "per_patient": per_patient,
            "best": best,
            "rng": _rng_state(),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(ckpt, tmp)
        bar.set_postfix(train=record["train_loss"], val=round(val_loss, 4), auc=val_auc)
        if on_epoch_end is not None:
            on_epoch_end(fold, epoch, record)
    bar.close()
    if tb is not None:
        tb.close()

    if t.validation == "final":  # the model at the end of the schedule, whatever its validation loss
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(run.weights(fold)) as tmp:
            save_file(state, str(tmp))
    _write_csv(
        run.val_predictions(fold),
        ["subject", "probability", "label"],
        [[s, repr(p), rows[s].label] for s, p in zip(split["val"], best["probabilities"], strict=True)],
    )
    suspects = flag_suspects(per_patient, t.suspect_window)
    _write_csv(
        run.fold_suspects(fold),
        ["subject", "fold", "mean_val_loss", "label"],
        [[s, fold, f"{m:.6g}", rows[s].label] for s, m in suspects],
    )
    sel = history[best["epoch"]] if best["epoch"] >= 0 else {}
    done = {
        "fold": fold,
        "epochs": t.epochs,
        "validation": t.validation,
        "selection": SELECTION_TEXT[t.validation],
        "selected_epoch": best["epoch"],
        "selected_val_loss": sel.get("val_loss"),
        "selected_val_auc": sel.get("val_auc"),
        "n_train": len(fit_subjects),
        "n_inner_val": len(inner_subjects),
        "n_val": len(split["val"]),
        "device": device.type,
    }
    atomic_write(run.done(fold), json.dumps(done, indent=2) + "\n")
    return done


# -- whole runs ------------------------------------------------------------------------------------
def collect(prep: PreparedRun) -> Path:
    """Assemble oof_predictions.csv and suspect_labels.csv from finished folds."""
    run, rows = prep.run, prep.rows
    missing = [k for k in range(len(prep.splits)) if not run.is_fold_done(k)]
    if missing:
        raise ModelError(f"{run.path}: fold(s) {missing} not finished; cannot assemble OOF predictions")
    oof, suspects = [], []
    for k in range(len(prep.splits)):
        with open(run.val_predictions(k), newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                row = rows[r["subject"]]
                oof.append([row.subject, k, r["probability"], row.label, row.scanner, row.site])
        with open(run.fold_suspects(k), newline="", encoding="utf-8") as fh:
            suspects += [
                [r[c] for c in ("subject", "fold", "mean_val_loss", "label")] for r in csv.DictReader(fh)
            ]
    subjects = [r[0] for r in oof]
    if sorted(subjects) != sorted(rows):
        raise ModelError(f"{run.path}: OOF predictions do not cover the training subjects exactly once")
    _write_csv(run.suspect_csv, ["subject", "fold", "mean_val_loss", "label"], suspects)
    _write_csv(run.oof_csv, list(OOF_COLUMNS), oof)
    return run.oof_csv


def _clear(run: RunDir, folds: list[int], everything: bool) -> None:
    for k in folds:
        shutil.rmtree(run.fold_dir(k), ignore_errors=True)
    for p in [run.oof_csv, run.suspect_csv] + (
        [run.splits_json, run.plans_json, run.experiment_toml] if everything else []
    ):
        p.unlink(missing_ok=True)


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    fold: int | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
    cache_root: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> RunDir:
    """Train all folds (or one with ``fold``) into ``out``; OOF predictions once every fold is done.

    Without ``resume``/``force`` nothing already trained is overwritten: a finished run, a finished
    fold or an interrupted fold raise ConfigError. ``resume`` skips finished folds and continues an
    interrupted one from its last epoch; ``force`` deletes what it is about to retrain.
    """
    run = RunDir(out)
    n = cfg.training.folds
    if fold is not None and not 0 <= fold < n:
        raise ConfigError(f"--fold {fold} is out of range: the experiment has {n} folds (0..{n - 1})")
    folds = [fold] if fold is not None else list(range(n))
    dev = resolve_device(device)
    if force:
        _clear(run, folds, everything=fold is None)
    elif not resume:
        if fold is None and run.oof_csv.is_file():
            raise ConfigError(
                f"{run.path} holds a finished run; use --resume to keep it or --force to retrain"
            )
        started = [
            k
            for k in folds
            if run.fold_dir(k).is_dir()
            and any(run.fold_dir(k).iterdir())
            and not (fold is None and run.is_fold_done(k))
        ]
        if started and not (fold is None and all(run.is_fold_done(k) for k in folds)):
            raise ConfigError(
                f"{run.path}: fold(s) {started} already started or finished; use --resume to continue "
                "or --force to retrain"
            )
    prep = prepare_run(cfg, out, cache_root=cache_root, progress=progress)
    for k in folds:
        if run.is_fold_done(k):
            continue
        train_fold(prep, k, device=dev, progress=progress, on_epoch_end=on_epoch_end)
    if all(run.is_fold_done(k) for k in range(n)):
        collect(prep)
    return run


def read_oof(path: str | Path) -> list[dict[str, str]]:
    """Rows of an oof_predictions.csv as strings (for tests and quick checks)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
