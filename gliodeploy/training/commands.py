"""``gliodeploy train``: cross-validated training of one experiment config."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Experiment TOML, e.g. training/cnn3d_aug.toml."),
    manifest: Path | None = typer.Option(
        None, "--manifest", "-m", help="Cohort manifest CSV ([data].manifest)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default runs/<experiment name>)."
    ),
    fold: int | None = typer.Option(
        None, "--fold", "-f", help="Train only this fold (0-based; cluster arrays)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Skip finished folds, continue an interrupted one."),
    force: bool = typer.Option(False, "--force", help="Delete and retrain what is already there."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override training.epochs."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Preprocessing cache root (default <manifest folder>/cache)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (CI, log files)."),
) -> None:
    """Train a 3D CNN with stratified K-fold cross-validation (label x scanner).

    Writes the run directory (plans.json, splits.json, fold_<k>/ with the best weights,
    checkpoints and logs) and, once every fold is finished, oof_predictions.csv.

    Cluster use: run `gliodeploy train CFG --out RUN --fold $K` for K = 0..folds-1 (one job per fold),
    then `gliodeploy train CFG --out RUN --resume` to assemble the out-of-fold predictions.
    """
    import dataclasses

    from gliodeploy.errors import ConfigError
    from gliodeploy.training.config import load_experiment
    from gliodeploy.training.loop import run_experiment

    cfg = load_experiment(config)
    if manifest is not None:
        cfg = dataclasses.replace(cfg, manifest=manifest.resolve())
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1 (got {epochs})")
        cfg = cfg.replace_training(epochs=epochs)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pick one")
    out = out or Path("runs") / cfg.name
    run = run_experiment(
        cfg, out, fold=fold, resume=resume, force=force, device=device, progress=not quiet, cache_root=cache
    )
    done = run.done_folds()
    if run.oof_csv.is_file():
        from sklearn.metrics import roc_auc_score

        rows = run.oof_predictions()
        labels = [r["label"] for r in rows]
        auc = (
            roc_auc_score(labels, [r["probability"] for r in rows]) if len(set(labels)) == 2 else float("nan")
        )
        typer.echo(f"{run.path}: {len(done)} folds done; out-of-fold AUC {auc:.3f} on {len(rows)} subjects")
    else:
        typer.echo(
            f"{run.path}: fold(s) {done} of {run.n_folds} done; rerun with --resume when all are finished"
        )


def distill(
    run_dir: Path = typer.Argument(
        ..., help="Finished, evaluated training run (its fold ensemble is the teacher)."
    ),
    width: float = typer.Option(0.5, "--width", help="Student width relative to the run's model (0-1]."),
    epochs: int = typer.Option(24, "--epochs", help="Training epochs of the student (cosine schedule)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    hard_weight: float = typer.Option(
        0.0,
        "--hard-weight",
        help="Share of the loss on the recorded labels (0: the ensemble's probabilities only).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    manifest: Path | None = typer.Option(None, "--manifest", "-m", help="Default: the run's manifest."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Preprocessing cache root (default <manifest folder>/cache)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing RUN_DIR/distilled."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Distil the fold ensemble of RUN_DIR into one narrower network of the same architecture.

    The student learns the ensemble's probability on the training subjects (with the run's
    augmentation) and is compared with the ensemble on the manifest's test split: AUC of both with a
    paired bootstrap, decision agreement at the operating point. Writes RUN_DIR/distilled/
    (model.safetensors, distill.json). `gliodeploy export RUN_DIR --distilled` ships it only if its
    held-out AUC is within 0.02 of the ensemble's.
    """
    from gliodeploy.training.distill import DistillSettings, distill_run

    settings = DistillSettings(
        width=width, epochs=epochs, batch_size=batch_size, lr=lr, hard_weight=hard_weight, seed=seed
    )
    result = distill_run(
        run_dir, settings, manifest=manifest, cache_root=cache, force=force, progress=not quiet
    )
    info = result.info
    p = info["parameters"]
    typer.echo(
        f"distilled {info['teacher']['folds']} folds into one {info['model']['name']} (width {width:g}): "
        f"{p['student']:,} parameters vs {p['ensemble']:,}; written to {result.path}"
    )
    cmp = result.comparison
    if cmp and cmp.get("auc_student") is not None:
        d = cmp["difference"]
        typer.echo(
            f"held-out AUC: student {cmp['auc_student']:.3f}, ensemble {cmp['auc_ensemble']:.3f} "
            f"(difference {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], n={cmp['n']}); "
            f"decisions agree on {cmp['decision_agreement']:.0%}"
        )
    ok, why = result.deployable()
    typer.echo(("deployable with `gliodeploy export --distilled`: " if ok else "NOT deployable: ") + why)
