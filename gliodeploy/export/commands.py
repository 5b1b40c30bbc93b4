"""``gliodeploy export`` and ``gliodeploy verify``."""

from __future__ import annotations

from pathlib import Path

import typer

from gliodeploy.errors import ConfigError


def export(
    run_dir: Path = typer.Argument(..., help="Finished training run (output of `gliodeploy train`)."),
    out: Path = typer.Option(
        Path("model_repository"),
        "--out",
        "-o",
        help="Triton model repository (created; a new version is added).",
    ),
    profile: Path | None = typer.Option(
        None,
        "--profile",
        help="Deployment profile TOML (export/gpu.toml, export/cpu.toml, export/local.toml).",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="onnx (default) or torchscript (deprecated upstream); overrides the profile."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Ship this decision threshold instead of the operating point `gliodeploy evaluate` chose on "
        "the out-of-fold predictions (RUN_DIR/operating_point.json). Required for a run never evaluated.",
    ),
) -> None:
    """Export the fold ensemble of RUN_DIR as the next version of a Triton model repository.

    Writes gliodeploy_ensemble (ONNX graph + GPU/CPU/local configurations), gliodeploy_geometry
    (server-side preprocessing) and gliodeploy_native (geometry -> ensemble), each version with a
    model card and SHA256SUMS. The decision threshold is the run's operating point, chosen by
    `gliodeploy evaluate` on the out-of-fold predictions (or --threshold). The exported graph is
    checked against PyTorch on synthetic scans; the export fails if they differ. Existing versions
    are never modified; the new state (all models and configurations) is built beside the repository
    and swapped in at once, so an interrupted export leaves the repository as it was.
    """
    import dataclasses

    from rich.console import Console

    from gliodeploy.export.pipeline import export_run
    from gliodeploy.export.profiles import FORMATS, ExportProfile

    prof = ExportProfile.from_toml(profile) if profile else ExportProfile()
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
        prof = dataclasses.replace(prof, format=fmt)
    console = Console(stderr=True)
    with console.status(f"exporting {run_dir} ({prof.format}, profile {prof.name}) and checking parity..."):
        result = export_run(run_dir, out, profile=prof, threshold=threshold)
    typer.echo(
        f"exported version {result.version} to {result.repository} "
        f"(parity max abs diff {result.parity_max_abs_diff:.2g})"
    )
    from gliodeploy.evaluation.operating_point import describe

    typer.echo(f"operating point: {describe(result.operating_point)}")


def verify(
    repository: Path = typer.Argument(..., help="Triton model repository written by `gliodeploy export`."),
) -> None:
    """Check every file Triton loads or a client trusts against the repository's checksums.

    Every config.pbtxt and configs/*.pbtxt and every version file must match the root SHA256SUMS (and
    its version's own); nothing export did not write may be there (extra model folder, stray file,
    __pycache__, symlink, staging folder); configurations parse, file parameters stay inside their
    version folder, and the published threshold/preprocessing equal the version's metadata. Exits
    non-zero naming the first problem.
    """
    from gliodeploy.export.modelcard import verify_repository

    found = verify_repository(repository)
    for model, versions in found.items():
        typer.echo(f"{model}: versions {', '.join(map(str, versions))} OK")
