"""``gliodeploy-client``: send PET scans to a gliodeploy Triton server.

Exit codes: 0 every scan predicted; 1 some scans failed (the others are reported); 2 bad usage or
bad input; 3 SUV cannot be computed; 5 server unreachable; 6 timeout; 7 model not found/not ready;
8 wrong model version; 9 invalid server response. A failing single scan exits with its own code.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from gliodeploy import contract
from gliodeploy.cli_utils import LOG_FILE, OLD_VERSION, VERBOSE, configure_logging, run_app, version_option
from gliodeploy.errors import InputError

app = typer.Typer(
    name="gliodeploy-client",
    help="Send 18F-FDOPA PET scans to a gliodeploy Triton server and get a recurrence probability.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help shows every word: rich markup would swallow "[data].manifest", "[:port]"
)


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


class Compression(str, Enum):
    none = "none"
    gzip = "gzip"
    deflate = "deflate"


# Shared connection options (typer has no option groups; the same defaults everywhere).
URL = typer.Option(
    None,
    "--url",
    envvar="GLIODEPLOY_URL",
    help="Server host[:port] or http(s)://host[:port] [default: localhost:8000 "
    "(http) / localhost:8001 (grpc)].",
)
PROTO = typer.Option(
    Protocol.http, "--protocol", envvar="GLIODEPLOY_PROTOCOL", help="Transport: KServe v2 over HTTP or gRPC."
)
MODEL = typer.Option(contract.ENSEMBLE_MODEL, "--model", help="Triton model name.")
MODEL_VERSION = typer.Option("", "--model-version", help="Model version [default: the latest ready one].")
TIMEOUT = typer.Option(60.0, "--timeout", min=0.001, help="Seconds to wait for each server answer.")
RETRIES = typer.Option(3, "--retries", min=0, help="Retries on transient failures (server restarting, 503).")
SSL = typer.Option(False, "--ssl", help="Use TLS (https / secure gRPC).")
CA_FILE = typer.Option(None, "--ca-file", help="PEM file of CA certificates to trust (implies --ssl).")
HEADER = typer.Option(
    None,
    "--header",
    "-H",
    help="Extra request header 'Name: value' (repeatable). Pass a token with --token-file or "
    "GLIODEPLOY_TOKEN instead: a header on the command line shows in the process list.",
)
TOKEN_FILE = typer.Option(
    None,
    "--token-file",
    envvar="GLIODEPLOY_TOKEN_FILE",
    dir_okay=False,
    metavar="FILE",
    help="Send the bearer token held in FILE (mode 600: refused if group or others may read it) as "
    "'Authorization: Bearer TOKEN' [default: the GLIODEPLOY_TOKEN environment variable, if set].",
)
ALLOW_INSECURE = typer.Option(
    False,
    "--allow-insecure-credentials",
    help="Send a token or Authorization/Cookie/API-key header without TLS to a non-loopback host "
    "(refused otherwise; to loopback it is only a warning).",
)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = version_option("gliodeploy-client"),
    verbose: int = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Options of the program itself, given before the command: ``gliodeploy-client -v predict ...``."""
    ctx.call_on_close(configure_logging(verbose, log_file))


def parse_headers(values: list[str] | None) -> dict[str, str]:
    """``["Name: value", ...]`` -> dict; a malformed header is an :class:`InputError`."""
    headers: dict[str, str] = {}
    for raw in values or []:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise InputError(f"--header {raw!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _client(  # noqa: ANN202 (the client module is imported lazily: --help stays instant)
    url: str | None,
    protocol: Protocol,
    model: str,
    version: str,
    timeout: float,
    retries: int,
    ssl: bool,
    ca_file: Path | None,
    header: list[str] | None,
    token_file: Path | None,
    allow_insecure: bool,
    fp16: bool = False,
    compression: str = "none",
):
    """The :class:`GliodeployClient` the options describe, once its credentials may travel as asked."""
    from gliodeploy.client.api import GliodeployClient
    from gliodeploy.client.credentials import check_credential_transport, resolve_token, with_token

    proto = protocol.value
    client = GliodeployClient(
        url or f"localhost:{8000 if proto == 'http' else 8001}",
        protocol=proto,
        model=model,
        model_version=version,
        timeout=timeout,
        retries=retries,
        ssl=ssl,
        ca_file=str(ca_file) if ca_file else None,
        headers=with_token(parse_headers(header), resolve_token(token_file)),
        fp16=fp16,
        compression=compression,
    )
    warning = check_credential_transport(client.endpoint, allow_insecure)  # before any request is sent
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    return client


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from gliodeploy.utils.atomic import atomic_write

        atomic_write(output, text)


def batch_exit_code(results: list) -> int:  # list[Prediction | ScanFailure]
    """0 if all succeeded; the shared code if all failed the same way; else 1 (some failed)."""
    from gliodeploy.client.errors import EXIT_SOME_FAILED

    failed = [r for r in results if not r.ok]
    if not failed:
        return 0
    codes = {r.exit_code for r in failed}
    if len(failed) == len(results) and len(codes) == 1:
        return codes.pop()
    return EXIT_SOME_FAILED


def suv_kwargs(
    weight: float | None,
    dose_mbq: float | None,
    injection_time: str | None,
    scan_time: str | None,
    units: str | None,
    radionuclide: str | None,
    assume_suv: bool,
) -> dict[str, Any]:
    """Check the SUV command-line options and turn them into ``load_pet`` keyword arguments.

    Shared by ``gliodeploy-client predict`` and ``gliodeploy predict`` so both read scans alike.
    """
    from gliodeploy.io.suv import half_life_for

    given = (weight, dose_mbq, injection_time, scan_time, units, radionuclide)
    if assume_suv and any(v is not None for v in given):
        raise typer.BadParameter(
            "--assume-suv cannot be combined with --weight/--dose/--*-time/--units/--radionuclide"
        )
    if dose_mbq is not None and not (1.0 <= dose_mbq <= 2000.0):
        raise InputError(
            f"--dose {dose_mbq:g}: expected the injected dose in MBq (1-2000); was it given in Bq?"
        )
    return {
        "weight_kg": weight,
        "injected_dose_bq": dose_mbq * 1e6 if dose_mbq is not None else None,
        "injection_time": injection_time,
        "scan_time": scan_time,
        "image_units": units,
        "half_life_s": half_life_for(radionuclide) if radionuclide else None,
        "assume_suv": assume_suv,
    }


@app.command()
def predict(
    paths: list[Path] = typer.Argument(
        ..., help="NIfTI files, DICOM series folders, or folders holding them."
    ),
    url: str | None = URL,
    protocol: Protocol = PROTO,
    model: str = MODEL,
    model_version: str = MODEL_VERSION,
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
        None,
        "--series-uid",
        help="DICOM SeriesInstanceUID to read from a folder holding several series (one scan only) "
        "[default: the PET series, attenuation-corrected first; the choice is printed].",
    ),
    server_preprocess: bool = typer.Option(
        False,
        "--server-preprocess",
        help=f"Send the native volume; {contract.NATIVE_PIPELINE_MODEL} preprocesses it.",
    ),
    concurrency: int = typer.Option(4, "--concurrency", "-j", min=1, help="Scans in flight at once."),
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
    ssl: bool = SSL,
    ca_file: Path | None = CA_FILE,
    header: list[str] | None = HEADER,
    token_file: Path | None = TOKEN_FILE,
    allow_insecure_credentials: bool = ALLOW_INSECURE,
    fp16: bool = typer.Option(
        False, "--fp16", help="Send FP16 (only for a model exported with an FP16 input)."
    ),
    compression: Compression = typer.Option(
        Compression.none,
        "--compression",
        help="Compress each request (HTTP Content-Encoding, gRPC message compression): a brain-masked "
        "grid shrinks ~6x; worth it on a slow network, not on loopback.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (one row per scan) instead of text."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result to FILE (atomically)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict P(recurrence) vs treatment-related change for each scan.

    SUV: DICOM series carry weight/dose/times; a NIfTI takes them from its BIDS-PET sidecar (and
    participants.tsv), else give --weight/--dose/--injection-time/--scan-time/--units/--radionuclide,
    or --assume-suv if the image already holds SUV.
    Exit code 0 only if every scan was predicted.
    """
    from gliodeploy.client.discovery import discover_scans
    from gliodeploy.client.output import human_line, to_csv, to_json

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    suv = suv_kwargs(weight, dose, injection_time, scan_time, units, radionuclide, assume_suv)
    scans = discover_scans(paths)
    if series_uid is not None:
        if len(scans) != 1:
            raise InputError(f"--series-uid names one series: give one scan, not {len(scans)}")
        suv["series_uid"] = series_uid
    suv["server_preprocess"] = server_preprocess
    with _client(
        url,
        protocol,
        model,
        model_version,
        timeout,
        retries,
        ssl,
        ca_file,
        header,
        token_file,
        allow_insecure_credentials,
        fp16,
        compression.value,
    ) as client:
        info = client.info()  # fails fast (one clear error) if the server or model is unavailable
        show_bar = not quiet and sys.stderr.isatty() and len(scans) > 1
        if show_bar:
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("predicting", total=len(scans))
                results = client.predict_many(
                    scans, concurrency=concurrency, progress=lambda _r: bar.advance(task), **suv
                )
        else:
            results = client.predict_many(scans, concurrency=concurrency, **suv)

    if as_json:
        text = to_json(results, {"model": info.to_dict()})
    elif as_csv:
        text = to_csv(results, info)
    else:
        header = f"{info.name} v{info.version or '?'}: operating point {info.operating_point_text()}\n"
        text = header + "".join(human_line(r) + "\n" for r in results)
    _emit(text, output)
    for r in results:
        if r.ok and r.scan.get("series_choice"):  # say which series of a study folder was read
            typer.echo(f"{r.source}: {r.scan['series_choice']}", err=True)
        if not r.ok and (as_json or as_csv or output is not None):
            typer.echo(f"error: {r.source}: {r.error}", err=True)  # failures stay visible to the operator
    raise typer.Exit(batch_exit_code(results))


@app.command()
def health(
    url: str | None = URL,
    protocol: Protocol = PROTO,
    model: str = MODEL,
    model_version: str = MODEL_VERSION,
    _old_version: str | None = OLD_VERSION,
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
    ssl: bool = SSL,
    ca_file: Path | None = CA_FILE,
    header: list[str] | None = HEADER,
    token_file: Path | None = TOKEN_FILE,
    allow_insecure_credentials: bool = ALLOW_INSECURE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Is the server live and ready, and is the model loaded? Exit 0 only if all three."""
    from gliodeploy.client.errors import ModelNotReadyError, ServerUnavailableError

    with _client(
        url,
        protocol,
        model,
        model_version,
        timeout,
        retries,
        ssl,
        ca_file,
        header,
        token_file,
        allow_insecure_credentials,
    ) as client:
        status = client.health()
    if as_json:
        typer.echo(json.dumps(status, indent=2))
    else:
        typer.echo(
            f"server {status['url']} ({status['protocol']}): live={status['live']} ready={status['ready']}; "
            f"model {status['model']} ({status['model_version']}): ready={status['model_ready']}"
        )
    if not (status["live"] and status["ready"]):
        raise ServerUnavailableError(f"server {status['url']} is not ready")
    if not status["model_ready"]:
        raise ModelNotReadyError(f"model {status['model']} ({status['model_version']}) is not ready")


@app.command()
def info(
    url: str | None = URL,
    protocol: Protocol = PROTO,
    model: str = MODEL,
    model_version: str = MODEL_VERSION,
    _old_version: str | None = OLD_VERSION,
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
    ssl: bool = SSL,
    ca_file: Path | None = CA_FILE,
    header: list[str] | None = HEADER,
    token_file: Path | None = TOKEN_FILE,
    allow_insecure_credentials: bool = ALLOW_INSECURE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the model: versions, folds, operating point (decision threshold, how it was chosen, expected
    sensitivity/specificity), CPU engine and precision, model grid and preprocessing."""
    with _client(
        url,
        protocol,
        model,
        model_version,
        timeout,
        retries,
        ssl,
        ca_file,
        header,
        token_file,
        allow_insecure_credentials,
    ) as client:
        mi = client.info()
    if as_json:
        typer.echo(json.dumps(mi.to_dict(), indent=2))
        return
    pre = mi.preprocessing
    typer.echo(
        f"model {mi.name} version {mi.version or '?'} (versions: {', '.join(mi.versions) or '?'}) on "
        f"{mi.server.get('name', 'server')} {mi.server.get('version', '')}\n"
        f"  folds: {mi.folds if mi.folds is not None else 'dynamic'}; "
        f"input: {mi.input_datatype} [B, 1, {', '.join(map(str, mi.grid_shape))}]\n"
        f"  operating point: {mi.operating_point_text()}\n"
        f"  CPU engine: {mi.runtime_text()}\n"
        f"  preprocessing: spacing {pre.get('spacing')} mm, shape {pre.get('shape')}, "
        f"normalization {pre.get('normalization')}"
    )


def main() -> None:
    """Console-script entry point."""
    run_app(app)


if __name__ == "__main__":
    main()
