"""``gliodeploy export`` and ``gliodeploy verify``."""

from __future__ import annotations

from pathlib import Path

import typer

from gliodeploy.client.cli import (
    ALLOW_INSECURE,
    CA_FILE,
    HEADER,
    PROTO,
    RETRIES,
    SSL,
    TIMEOUT,
    TOKEN_FILE,
    Protocol,
)
from gliodeploy.errors import ConfigError, ModelError


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
    distilled: bool = typer.Option(
        False,
        "--distilled",
        help="Ship the run's distilled single network (`gliodeploy distill`) instead of its K folds, with "
        "the ensemble's operating point; refused unless its held-out AUC was measured within 0.02 of the "
        "ensemble's.",
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
        result = export_run(run_dir, out, profile=prof, threshold=threshold, distilled=distilled)
    what = "distilled model" if distilled else "fold ensemble"
    typer.echo(
        f"exported version {result.version} ({what}) to {result.repository} "
        f"(parity max abs diff {result.parity_max_abs_diff:.2g})"
    )
    from gliodeploy.evaluation.operating_point import describe

    typer.echo(f"operating point: {describe(result.operating_point)}")


def verify(
    repository: Path = typer.Argument(..., help="Triton model repository written by `gliodeploy export`."),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Also send the latest version's reference cases to the server at this host[:port] or "
        "http(s)://host[:port] (any backend serving REPOSITORY) and compare its answers with PyTorch's.",
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        help="With --server: largest allowed |difference| of any probability (ensemble or fold) "
        "[default: 1e-4; 2e-2 for an FP16 export; 2e-3 when the server publishes a bf16/int8 CPU engine]. "
        "Use 2e-2 for an FP32 export run by TensorRT in FP16. "
        "A decision flip at the operating point fails whatever the tolerance.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
    protocol: Protocol = PROTO,
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
    ssl: bool = SSL,
    ca_file: Path | None = CA_FILE,
    header: list[str] | None = HEADER,
    token_file: Path | None = TOKEN_FILE,
    allow_insecure: bool = ALLOW_INSECURE,
) -> None:
    """Check every file Triton loads or a client trusts against the repository's checksums and, with
    --server, that a running server answers the reference cases as the trained models did.

    Every config.pbtxt and configs/*.pbtxt and every version file (reference cases included) must
    match the root SHA256SUMS (and its version's own); nothing export did not write may be there (extra
    model folder, stray file, __pycache__, symlink, staging folder); configurations parse, file
    parameters stay inside their version folder, and the published threshold/preprocessing equal the
    version's metadata. Exits non-zero naming the first problem.

    With --server URL, the latest version's reference cases (preprocessed scans stored at export with
    PyTorch's fold and ensemble probabilities) are sent to the server; it fails (exit 4, a table of the
    cases) when any probability differs by more than the tolerance or any decision at the version's
    operating point differs, or when the server publishes another threshold or model checksum.
    """
    import json

    from gliodeploy import contract
    from gliodeploy.export.modelcard import verify_repository

    if server is None and tolerance is not None:
        raise ConfigError("--tolerance applies to the reference cases sent with --server URL")
    found = verify_repository(repository)
    lines = [f"{model}: versions {', '.join(map(str, versions))} OK" for model, versions in found.items()]
    if server is None:
        doc = {"repository": str(repository), "ok": True, "versions": found}
        typer.echo(json.dumps(doc, indent=2) if as_json else "\n".join(lines))
        return
    from gliodeploy.client.cli import _client
    from gliodeploy.export.reference import check_server, results_table

    version = max(found[contract.ENSEMBLE_MODEL])
    args = (timeout, retries, ssl, ca_file, header, token_file, allow_insecure)
    with _client(server, protocol, contract.ENSEMBLE_MODEL, str(version), *args) as client:
        check = check_server(
            repository / contract.ENSEMBLE_MODEL / str(version), version, client, tolerance=tolerance
        )
    if as_json:
        typer.echo(
            json.dumps({"repository": str(repository), "versions": found, **check.to_dict()}, indent=2)
        )
    else:
        typer.echo("\n".join(lines))
        typer.echo(results_table(check.results, check.tolerance))
        for problem in check.problems:
            typer.echo(f"problem: {problem}")
        if check.ok:
            typer.echo(check.summary())
    if not check.ok:
        raise ModelError(check.summary())
