"""``gliodeploy predict``: offline inference on an exported model repository (no server)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gliodeploy import contract
from gliodeploy.cli_utils import OLD_VERSION


def predict(
    repository: Path = typer.Argument(..., help="Triton model repository written by `gliodeploy export`."),
    paths: list[Path] = typer.Argument(
        ..., help="NIfTI files, DICOM series folders, or folders holding them."
    ),
    model_version: str = typer.Option(
        "",
        "--model-version",
        help=f"Version of {contract.ENSEMBLE_MODEL} to run [default: the latest, the one a server serves].",
    ),
    _old_version: str | None = OLD_VERSION,
    weight: float | None = typer.Option(None, "--weight", help="Patient weight in kg (SUV)."),
    dose: float | None = typer.Option(None, "--dose", help="Injected dose in MBq (SUV)."),
    injection_time: str | None = typer.Option(
        None, "--injection-time", help="Injection time, ISO 'YYYY-MM-DDTHH:MM:SS' or 'HH:MM:SS' (SUV)."
    ),
    scan_time: str | None = typer.Option(
        None,
        "--scan-time",
        help="Time the image is decay-corrected to (usually scan start), for a NIfTI without sidecar (SUV).",
    ),
    units: str | None = typer.Option(
        None, "--units", help="Image units for a NIfTI without sidecar, e.g. 'Bq/mL' or 'kBq/mL' (SUV)."
    ),
    radionuclide: str | None = typer.Option(
        None, "--radionuclide", help="Tracer radionuclide for a NIfTI without sidecar: F18 for FDOPA (SUV)."
    ),
    assume_suv: bool = typer.Option(
        False, "--assume-suv", help="The images already hold SUV: no conversion."
    ),
    series_uid: str | None = typer.Option(
        None, "--series-uid", help="DICOM SeriesInstanceUID to read from a folder holding several series."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when onnxruntime-gpu sees a GPU, else CPU), cpu or cuda."
    ),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Engine intra-op threads (0: one per physical core)."
    ),
    engine: str = typer.Option(
        "",
        "--engine",
        envvar="GLIODEPLOY_CPU_ENGINE",
        help="onnxruntime, openvino or auto (measured on the version's reference cases) "
        "[default: the version's exported choice].",
    ),
    precision: str = typer.Option(
        "",
        "--precision",
        envvar="GLIODEPLOY_CPU_PRECISION",
        help="fp32, bf16 (OpenVINO, AMX/AVX512-BF16 CPUs), int8 or auto [default: the exported choice].",
    ),
    workers: int = typer.Option(
        2, "--workers", "-j", min=1, help="Threads reading and preprocessing the next scans during inference."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (one row per scan) instead of text."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result to FILE (atomically)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no runtime line on stderr."),
) -> None:
    """Predict P(recurrence) vs treatment-related change for each scan, in-process, without a server.

    Verifies REPOSITORY (as `gliodeploy verify`), then runs the ensemble version's ONNX graph with
    ONNX Runtime or OpenVINO (--engine, --precision), with the version's preprocessing and operating
    point (threshold, decision): the
    answers of `gliodeploy-client predict` against `gliodeploy serve REPOSITORY`, with the same
    reading, SUV options, outputs and exit codes. The next scans are read while the model runs.
    Exit code 0 only if every scan was predicted.
    """
    from gliodeploy.client.cli import batch_exit_code, suv_kwargs
    from gliodeploy.client.discovery import discover_scans
    from gliodeploy.client.output import human_line, to_csv, to_json
    from gliodeploy.predict.offline import OfflinePredictor
    from gliodeploy.utils.atomic import atomic_write

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    load_kwargs = suv_kwargs(weight, dose, injection_time, scan_time, units, radionuclide, assume_suv)
    if series_uid:
        load_kwargs["series_uid"] = series_uid
    scans = discover_scans(paths)
    predictor = OfflinePredictor(
        repository,
        version=model_version,
        device=device,
        threads=threads,
        engine=engine or None,
        precision=precision or None,
    )
    info = predictor.info
    if not quiet:
        typer.echo(f"running {predictor.describe()}", err=True)
        if predictor.auto is not None:
            typer.echo(f"auto engine: {predictor.auto.reason}", err=True)
    if not quiet and sys.stderr.isatty() and len(scans) > 1:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("predicting", total=len(scans))
            results = predictor.predict_many(
                scans, workers=workers, progress=lambda _r: bar.advance(task), **load_kwargs
            )
    else:
        results = predictor.predict_many(scans, workers=workers, **load_kwargs)

    if as_json:
        text = to_json(results, {"model": info.to_dict(), "runtime": predictor.runtime()})
    elif as_csv:
        text = to_csv(results, info)
    else:
        header = f"{info.name} v{info.version}: operating point {info.operating_point_text()}\n"
        text = header + "".join(human_line(r) + "\n" for r in results)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write(output, text)
    for r in results:
        if not r.ok and (as_json or as_csv or output is not None):
            typer.echo(f"error: {r.source}: {r.error}", err=True)  # failures stay visible to the operator
    raise typer.Exit(batch_exit_code(results))
