"""``gliodeploy evaluate``: metrics with bootstrap CIs, TBR baseline and the HTML report of trained runs."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    run_dirs: list[Path] = typer.Argument(
        ..., help="One or more run directories written by `gliodeploy train`."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", "-m", help="Cohort manifest with the test split (default: the one in plans.json)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default: RUN_DIR/evaluation of the first run)."
    ),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="Bootstrap resamples for the 95 % CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Preprocessing cache root (default: MANIFEST_FOLDER/cache, as in training)."
    ),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Compute the TBRmax clinical baseline."
    ),
    allow_no_test: bool = typer.Option(
        False, "--allow-no-test", help="Report validation only when the manifest has no test split."
    ),
    operating_point: str = typer.Option(
        "youden",
        "--operating-point",
        help="How the served decision threshold is chosen on the out-of-fold predictions: youden, "
        "sensitivity:0.90 (highest threshold keeping that OOF sensitivity), specificity:0.80, or a "
        "fixed number such as 0.62. Written to RUN_DIR/operating_point.json; `gliodeploy export` ships it.",
    ),
    calibrate: bool = typer.Option(
        False,
        "--calibrate/--no-calibrate",
        help="Fit a temperature on the OOF predictions; the threshold is chosen on the calibrated "
        "probabilities and the export applies the temperature inside the graph.",
    ),
    localisation: bool | None = typer.Option(
        None,
        "--localisation/--no-localisation",
        help="Grad-CAM of the fold ensemble on every true recurrence of the test split: share of "
        "attention inside the brain and how often the map's peak lies within 20 mm of the true lesion "
        "centre (default: on when the manifest has lesion_center_mm).",
    ),
    gradcam_layer: str | None = typer.Option(
        None, "--gradcam-layer", help="Layer for --localisation (default: the explain default layer)."
    ),
    artifact: Path | None = typer.Option(
        None,
        "--artifact",
        help="Evaluate the model exported from RUN_DIR into this Triton model repository instead: its "
        "ONNX graph runs as `gliodeploy predict` runs it, beside the PyTorch folds on the same test scans "
        "(max |dp| per fold and ensemble, decisions at the version's operating point, AUC of both when "
        "every test scan has a label; labels may be empty). Writes OUT/artifact.json, artifact.md and "
        "artifact_predictions.csv (default OUT: RUN_DIR/evaluation/artifact-vN); changes nothing in the run.",
    ),
    model_version: str = typer.Option(
        "", "--model-version", help="With --artifact: the version to evaluate [default: the latest]."
    ),
) -> None:
    """Evaluate trained runs: validation (out-of-fold) and external-test metrics with 95 % bootstrap CIs,
    the TBRmax baseline side by side, and a self-contained HTML report.

    Writes OUT/report.html (open it in a browser), OUT/report.md and OUT/metrics.json. Test predictions
    are the mean probability of the fold models on the manifest's split == "test" scans. Each run's
    operating point (decision threshold + expected sensitivity/specificity, chosen on its OOF
    predictions only) is written to RUN_DIR/operating_point.json for `gliodeploy export`.

    With --artifact REPO, the exported model is evaluated instead (see that option).
    """
    if artifact is not None:
        _evaluate_artifact(run_dirs, artifact, model_version, manifest, out, cache)
        return
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.errors import InputError, ModelError
    from gliodeploy.evaluation import inference
    from gliodeploy.evaluation.evaluate import BootstrapSettings
    from gliodeploy.evaluation.operating_point import (
        choose_operating_point,
        file_sha256,
        parse_method,
        write_operating_point,
    )
    from gliodeploy.evaluation.report import ReportInputs, run_validation_mode, write_report
    from gliodeploy.evaluation.rundata import load_run
    from gliodeploy.training.rundir import RunDir

    parse_method(operating_point)  # a bad --operating-point fails before any work
    runs = [load_run(p) for p in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:  # two runs of the same experiment: keep table rows distinguishable
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name} ({r.path.name})"

    manifest_path = manifest or (Path(runs[0].plans["manifest"]) if runs[0].plans.get("manifest") else None)
    if manifest_path is None:
        raise InputError(f"{runs[0].path}/plans.json names no manifest: pass --manifest")
    cohort = read_manifest(manifest_path, require_train=False)
    if not cohort.test and not allow_no_test:
        raise InputError(
            f"manifest {manifest_path} has no rows with split == 'test': nothing to evaluate externally "
            "(pass --allow-no-test for a validation-only report)"
        )
    cache_root = cache or cohort.path.parent / "cache"

    inputs = ReportInputs(
        runs=runs,
        manifest=str(cohort.path),
        distribution=[(r.split, r.site, r.scanner, r.label) for r in cohort.rows],
    )
    boot = BootstrapSettings(n_resamples=bootstrap, seed=seed)
    for r in runs:
        try:
            inputs.operating_points[r.name] = choose_operating_point(
                r.oof.labels,
                r.oof.scores,
                operating_point,
                validation_mode=run_validation_mode(r.plans),
                calibrate=calibrate,
                n_resamples=bootstrap,
                seed=seed,
                oof_sha256=file_sha256(r.path / "oof_predictions.csv"),
            )
        except InputError as exc:
            raise ModelError(f"{r.path}: cannot choose an operating point: {exc}") from exc
    configs = {}
    for r in runs:
        cfg = inference.preprocessing_config(r.plans, r.path)
        configs[cfg.fingerprint()] = cfg
        inputs.test[r.name] = None
        if cohort.test:
            typer.echo(f"[{r.name}] preprocessing {len(cohort.test)} test scans and running the fold models")
            volumes = inference.load_volumes(cohort.test, cfg, cache_root)
            models = RunDir(r.path).load_fold_models()
            inputs.test[r.name] = inference.ensemble_predictions(cohort.test, volumes, models)
            if localisation or (localisation is None and any(x.truth_lesion_mm for x in cohort.test)):
                from gliodeploy.explain.cohort import explain_cohort, read_true_labels

                loc = explain_cohort(
                    models,
                    cohort.test,
                    volumes,
                    tuple(cfg.spacing),
                    true_labels=read_true_labels(cohort.path),
                    layer=gradcam_layer,
                    population="external true recurrences",
                )
                inputs.localisation[r.name] = loc
                typer.echo(
                    f"[{r.name}] Grad-CAM localisation: {loc['n_localised']}/{loc['n_with_truth']} peaks "
                    f"within {loc['threshold_mm']:.0f} mm of the lesion, median attention inside the brain "
                    f"{loc['median_attention_inside_brain']:.0%} ({loc['n_explained']} scans, "
                    f"{loc['seconds']:.0f} s)"
                )
        prior = inference.untrained_prior(r.path)
        if prior is not None:  # what the architecture scores before training, on the same patients
            model, description = prior
            typer.echo(f"[{r.name}] scoring {description} on the same patients")
            by_subject = {row.subject: row for row in cohort.rows}
            missing = [s for s in r.oof.subjects if s not in by_subject]
            if missing:
                raise InputError(
                    f"{len(missing)} out-of-fold subject(s) of {r.path} are not in {cohort.path} "
                    f"(e.g. {missing[0]}): evaluate with the manifest the run was trained on"
                )
            oof_volumes = inference.load_volumes(
                [by_subject[s] for s in r.oof.subjects], cfg, cache_root, progress=False
            )
            prior_oof = inference.prior_predictions(model, r.oof, oof_volumes, progress=False)
            prior_test = None
            if inputs.test[r.name] is not None:
                prior_test = inference.prior_predictions(model, inputs.test[r.name], volumes, progress=False)
            inputs.prior[r.name] = (description, prior_oof, prior_test)

    if baseline:
        cfg = next(iter(configs.values()))  # the baseline reads SUV: any run's grid is fine, take the first
        typer.echo(f"TBR baseline on {len(cohort.rows)} scans")
        volumes = inference.load_volumes(list(cohort.rows), cfg, cache_root)
        params = inference.baseline_parameters(list(cohort.rows), volumes, tuple(cfg.spacing))
        inputs.baseline_params = {s: p.to_dict() for s, p in params.items()}
        inputs.baseline_summary = inference.baseline_summary(list(cohort.rows), params)
        if cohort.train and len({r.label for r in cohort.train}) == 2:
            inputs.baseline_train = inference.baseline_predictions(cohort.train, params)
            if cohort.test:
                inputs.baseline_test = inference.baseline_predictions(cohort.test, params)
        else:
            typer.echo("TBR baseline skipped: the training split lacks one of the two classes", err=True)

    out_dir = out or runs[0].path / "evaluation"
    try:
        paths = write_report(inputs, out_dir, boot)
    except InputError as exc:
        raise ModelError(f"cannot evaluate: {exc}") from exc
    for r in runs:  # after the report succeeded: the run's shipped decision rule
        op = inputs.operating_points[r.name]
        path = write_operating_point(r.path, op)
        typer.echo(f"[{r.name}] operating point: {op.summary()} -> {path}")
    import json

    for entry in json.loads(paths["metrics"].read_text(encoding="utf-8"))["runs"]:
        auc = entry["validation"]["thresholds"]["0.5"]["metrics"]["roc_auc"]
        typer.echo(
            f"[{entry['name']}] OOF AUC {auc['value']:.3f} [{auc['low']:.3f}-{auc['high']:.3f}] "
            f"(validation: {entry['validation_mode']})"
        )
        for note in entry.get("diagnosis", []):
            typer.echo(f"[{entry['name']}] warning: {note}")
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


def _evaluate_artifact(
    run_dirs: list[Path],
    repository: Path,
    version: str,
    manifest: Path | None,
    out: Path | None,
    cache: Path | None,
) -> None:
    """``gliodeploy evaluate RUN --artifact REPO``: the exported version beside the PyTorch folds."""
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.errors import InputError
    from gliodeploy.evaluation.artifact import compare_artifact, summary_lines, write_artifact_report
    from gliodeploy.training.rundir import RunDir

    if len(run_dirs) != 1:
        raise InputError(f"--artifact compares one run with its export; got {len(run_dirs)} runs")
    run = RunDir(run_dirs[0])
    plans = run.plans()
    manifest_path = manifest or (Path(plans["manifest"]) if plans.get("manifest") else None)
    if manifest_path is None:
        raise InputError(f"{run.path}/plans.json names no manifest: pass --manifest")
    cohort = read_manifest(manifest_path, require_train=False, require_labels=False)
    if not cohort.test:
        raise InputError(f"manifest {manifest_path} has no rows with split == 'test': nothing to evaluate")
    typer.echo(f"running the exported model and the PyTorch folds on {len(cohort.test)} test scans")
    comparison = compare_artifact(
        run.path,
        repository,
        cohort.test,
        manifest=str(cohort.path),
        cache_root=cache or cohort.path.parent / "cache",
        version=version or None,
    )
    doc = comparison.to_dict()
    paths = write_artifact_report(doc, out or run.path / "evaluation" / f"artifact-v{comparison.version}")
    for line in summary_lines(doc):
        typer.echo(line)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
