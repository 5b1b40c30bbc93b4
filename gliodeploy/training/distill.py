"""Distil a run's fold ensemble into one narrower network (``gliodeploy distill``).

The student is the run's own architecture at a reduced width, trained on the run's training subjects
to reproduce the ensemble's probability (soft targets: binary cross-entropy against the teacher's mean
probability, optionally mixed with the recorded labels), with the run's augmentation. It never sees
the held-out scans; when the manifest has a test split, the student and the ensemble are compared on
it (AUC with a paired bootstrap, decisions at the run's operating point).

The result lives in ``RUN/distilled/`` (``model.safetensors`` + ``distill.json``) and is exported
with ``gliodeploy export RUN --distilled`` as a one-model "ensemble". Measured on the demo
(``bench/bench_distill.py``, BENCHMARKS.md): 6 % of the ensemble's FLOPs, external AUC within 0.002.
Export refuses a student whose held-out AUC is more than :data:`MAX_AUC_LOSS` below the ensemble's,
or that was never compared with it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.utils.atomic import atomic_path

DISTILLED_DIR = "distilled"
DISTILL_JSON = "distill.json"
WEIGHTS = "model.safetensors"
#: A student stays deployable only within this held-out AUC of its ensemble (issue #12's rule).
MAX_AUC_LOSS = 0.02


@dataclass
class DistillSettings:
    """How the student is built and trained."""

    width: float = 0.5
    epochs: int = 24
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hard_weight: float = 0.0
    seed: int = 0

    def check(self) -> None:
        """ConfigError on values that cannot train."""
        if not 0 < self.width <= 1:
            raise ConfigError(f"--width must be in (0, 1] (got {self.width})")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be >= 1")
        if not 0 <= self.hard_weight <= 1:
            raise ConfigError(f"--hard-weight must be in [0, 1] (got {self.hard_weight})")


@dataclass
class Distilled:
    """A trained student and what is known about it (``distill.json``)."""

    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def comparison(self) -> dict[str, Any] | None:
        """The held-out comparison with the ensemble, when the manifest had a labelled test split."""
        return self.info.get("comparison")

    def summary(self, verdict: str) -> dict[str, Any]:
        """What a model card records: the record without per-scan lists, plus the export verdict."""
        info = {k: v for k, v in self.info.items() if k != "losses"}
        if self.comparison:
            info["comparison"] = {
                k: v for k, v in self.comparison.items() if k not in ("subjects", "student", "ensemble")
            }
        return {**info, "verdict": verdict}

    def deployable(self) -> tuple[bool, str]:
        """Whether export may ship it, and why (in words)."""
        cmp = self.comparison
        if not cmp or cmp.get("auc_student") is None:
            return False, (
                "the distilled model was never compared with the ensemble on labelled held-out scans "
                "(the manifest has no labelled test split)"
            )
        loss = cmp["auc_ensemble"] - cmp["auc_student"]
        if loss > MAX_AUC_LOSS:
            return False, (
                f"its held-out AUC {cmp['auc_student']:.3f} is {loss:.3f} below the ensemble's "
                f"{cmp['auc_ensemble']:.3f} (more than {MAX_AUC_LOSS})"
            )
        return True, (
            f"held-out AUC {cmp['auc_student']:.3f} vs the ensemble's {cmp['auc_ensemble']:.3f} "
            f"(within {MAX_AUC_LOSS})"
        )


def student_spec(plans: dict[str, Any], width: float) -> dict[str, Any]:
    """The run's model spec at ``width`` (the student's architecture)."""
    spec = dict(plans["model"])
    spec["width"] = width
    return spec


def train_student(
    student: Any,
    entries: list[Path],
    targets: np.ndarray,
    labels: np.ndarray,
    shape: tuple[int, int, int],
    augmentation: dict[str, Any] | None,
    settings: DistillSettings,
    *,
    progress: bool = True,
) -> list[float]:
    """Train ``student`` on the teacher's probabilities ``targets``; returns the mean loss per epoch."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from gliodeploy.data.augmentation import AugmentationConfig, Augmenter
    from gliodeploy.data.dataset import CachedVolumeDataset
    from gliodeploy.training.loop import lr_factor

    torch.manual_seed(settings.seed)
    augmenter = (
        Augmenter(shape, AugmentationConfig.from_dict(augmentation)) if augmentation is not None else None
    )
    ds = CachedVolumeDataset(
        entries, labels.tolist(), [p.stem for p in entries], augmenter=augmenter, seed=settings.seed
    )
    soft = torch.from_numpy(targets.astype(np.float32))
    opt = torch.optim.Adam(student.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    epochs = settings.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, epochs, 1, cosine=True))
    bce = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    bar = tqdm(range(epochs), desc="distil", unit="epoch", disable=not progress)
    for epoch in bar:
        ds.set_epoch(epoch)
        student.train()
        total, n = 0.0, 0
        gen = torch.Generator().manual_seed(settings.seed + epoch)
        for batch in DataLoader(ds, batch_size=settings.batch_size, shuffle=True, generator=gen):
            logit = student(batch["image"]).squeeze(1)
            loss = (1 - settings.hard_weight) * bce(logit, soft[batch["index"]])
            if settings.hard_weight:
                loss = loss + settings.hard_weight * bce(logit, batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(logit)
            n += len(logit)
        sched.step()
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    student.eval()
    return losses


def compare(
    labels: np.ndarray, student: np.ndarray, ensemble: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Student vs ensemble on the same held-out scans: AUCs (paired bootstrap) and decisions."""
    out: dict[str, Any] = {
        "n": int(len(student)),
        "max_abs_delta": float(np.max(np.abs(student - ensemble))),
        "decision_agreement": float(np.mean((student >= threshold) == (ensemble >= threshold))),
        "threshold": threshold,
        "auc_student": None,
        "auc_ensemble": None,
    }
    if len(set(labels.tolist())) == 2:
        from gliodeploy.evaluation.metrics import paired_bootstrap_auc

        cmp = paired_bootstrap_auc(labels, student, ensemble, n_resamples=2000, seed=0)
        d = cmp.delta
        out.update(
            auc_student=cmp.auc_a,
            auc_ensemble=cmp.auc_b,
            difference={"value": d.value, "low": d.low, "high": d.high, "p": cmp.p_value},
            n_positive=int(labels.sum()),
        )
    return out


def distill_run(
    run_dir: str | Path,
    settings: DistillSettings | None = None,
    *,
    manifest: str | Path | None = None,
    cache_root: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Distilled:
    """Train the student of ``run_dir`` and write ``RUN/distilled/`` atomically; returns it."""
    import torch
    from safetensors.torch import save_file

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.evaluation.inference import predict_volumes
    from gliodeploy.evaluation.operating_point import read_operating_point
    from gliodeploy.models.registry import count_parameters
    from gliodeploy.training.rundir import RunDir, build_from_spec

    settings = settings or DistillSettings()
    settings.check()
    run = RunDir(run_dir)
    target = run.path / DISTILLED_DIR
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to train a new student in its place")
    teacher = run.load_fold_models()  # an unfinished run is the first thing to say
    plans = run.plans()
    cfg = run.preprocessing()
    shape = tuple(cfg.shape)
    op = read_operating_point(run.path)
    if op is None:
        raise ConfigError(f"{run.path} was never evaluated: run `gliodeploy evaluate {run.path}` first")
    mf = read_manifest(manifest or plans["manifest"], require_labels=False)
    if not mf.train:
        raise ConfigError(f"{mf.path}: no training rows to distil on")
    root = Path(cache_root) if cache_root else mf.path.parent / "cache"
    train_entries = build_cache(mf.train, cfg, root, progress=progress)
    entries = [train_entries[r.subject] for r in mf.train]
    teacher_train = predict_volumes(teacher, [load_cached(e).array for e in entries], progress=progress).mean(
        1
    )

    torch.manual_seed(settings.seed)
    student = build_from_spec(student_spec(plans, settings.width), cfg)
    t0 = time.perf_counter()
    losses = train_student(
        student,
        entries,
        teacher_train,
        np.array([max(r.label, 0) for r in mf.train]),
        shape,
        plans.get("augmentation") if plans.get("training", {}).get("augmentation", True) else None,
        settings,
        progress=progress,
    )
    train_s = time.perf_counter() - t0

    comparison = None
    if mf.test:
        test_entries = build_cache(mf.test, cfg, root, progress=progress)
        test_x = [load_cached(test_entries[r.subject]).array for r in mf.test]
        ens = predict_volumes(teacher, test_x, progress=progress).mean(1)
        stu = predict_volumes([student], test_x, progress=progress)[:, 0]
        labelled = np.array([r.label >= 0 for r in mf.test])
        y = np.array([r.label for r in mf.test])
        comparison = compare(y[labelled], stu[labelled], ens[labelled], float(op.threshold))
        comparison["subjects"] = [r.subject for r in mf.test]
        comparison["student"] = stu.tolist()
        comparison["ensemble"] = ens.tolist()
    info = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "teacher": {"run": str(run.path.resolve()), "folds": len(teacher), "model": plans["model"]},
        "model": student_spec(plans, settings.width),
        "parameters": {"student": count_parameters(student), "ensemble": sum(map(count_parameters, teacher))},
        "settings": asdict(settings),
        "manifest": str(mf.path),
        "n_train": len(mf.train),
        "train_seconds": round(train_s, 1),
        "losses": losses,
        "comparison": comparison,
        "operating_point": "inherited from the ensemble (the student reproduces its probability)",
    }
    # --force: the old student is replaced only once the new one is complete
    with atomic_path(target, is_dir=True, replace_dir=force) as tmp:
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / DISTILL_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Distilled(target, info)


def load_distilled(run_dir: str | Path) -> tuple[Any, Distilled]:
    """The student model of ``run_dir`` (eval mode) and its record; ModelError when absent or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from gliodeploy.training.rundir import RunDir, build_from_spec

    run = RunDir(run_dir)
    folder = run.path / DISTILLED_DIR
    if not (folder / DISTILL_JSON).is_file() or not (folder / WEIGHTS).is_file():
        raise ModelError(f"{run.path} has no distilled model: run `gliodeploy distill {run.path}` first")
    try:
        info = json.loads((folder / DISTILL_JSON).read_text(encoding="utf-8"))
        model = build_from_spec(info["model"], run.preprocessing())
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (json.JSONDecodeError, KeyError, RuntimeError, OSError, SafetensorError) as exc:
        raise ModelError(f"{folder}: cannot load the distilled model: {exc}") from exc
    return model.eval(), Distilled(folder, info)
