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
