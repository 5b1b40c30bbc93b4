"""``gliodeploy serve``: the bundled Triton server on a verified snapshot of a model repository."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    repository: Path = typer.Argument(..., help="Triton model repository written by `gliodeploy export`."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it on the network)."
    ),
    config_name: str = typer.Option(
        "local",
        "--config-name",
        help="Model configuration: local (bundled server, python backend) or cpu/gpu.",
    ),
    metrics: bool = typer.Option(False, "--metrics", help="Expose Prometheus metrics."),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", help="Seconds to wait for readiness."),
    log_file: Path = typer.Option(
        None, "--log-file", help="Keep the server log in this file (appended); by default it is removed."
    ),
    allow_admin_api: bool = typer.Option(
        False,
        "--allow-admin-api",
        help="Expose Triton's full API (model load/unload, repository index, shared-memory registration, "
        "statistics, trace and log settings) to everyone who reaches the ports. Default: health, "
        "metadata, model configuration and inference only.",
    ),
    exit_timeout: int = typer.Option(
        3, "--exit-timeout", min=0, help="Seconds in-flight requests get to finish when stopping."
    ),
    cpu_engine: str = typer.Option(
        "",
        "--cpu-engine",
        envvar="GLIODEPLOY_CPU_ENGINE",
        help="onnxruntime, openvino or auto (measured on the version's reference cases before serving) "
        "[default: the version's exported choice]. Local configuration only.",
    ),
    cpu_precision: str = typer.Option(
        "",
        "--cpu-precision",
        envvar="GLIODEPLOY_CPU_PRECISION",
        help="fp32, bf16 (OpenVINO, AMX/AVX512-BF16 CPUs), int8 or auto [default: the exported choice].",
    ),
) -> None:
    """Verify REPOSITORY, then serve it with the Triton server bundled in nvidia-pytriton until stopped.

    What is served is exactly what was verified: the repository is copied into a private temporary
    folder, the copy is verified (checksums, configurations) and served with explicit model loading;
    later edits of REPOSITORY do not reach the server. Ctrl-C, SIGTERM or SIGHUP stop it within a few
    seconds and remove the copy, its log and shared memory; the exit code is then 0 (also when the stop
    comes before the server was ready). If the server itself fails, its log tail is printed and the
    exit code is 5. The bundled server has the python backend only, hence the `local` configurations
    (ONNX Runtime on CPU inside Triton). On a GPU host use NVIDIA's Triton container (docker/README.md).
    """
    import signal
    import time

    from rich.console import Console

    from gliodeploy.errors import ConfigError, ServerError
    from gliodeploy.export.modelcard import verify_repository
    from gliodeploy.serving.cpu_runtime import choose_served_runtime, publish_runtime
    from gliodeploy.serving.server import ServerStopRequested, TritonServer

    name = None if config_name == "gpu" else config_name

    def prepare(served: Path) -> None:
        """Choose the CPU engine on the verified copy (auto: by measurement) and publish it there."""
        try:
            runtime = choose_served_runtime(served, config_name, cpu_engine or None, cpu_precision or None)
        except ConfigError as exc:  # name the user's repository, not the private copy
            raise ConfigError(str(exc).replace(str(served), str(repository))) from None
        if runtime:
            publish_runtime(served, config_name, runtime)
            chosen.append(runtime)

    chosen: list[dict] = []
    server = TritonServer(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        host=host,
        metrics=metrics,
        model_config_name=name,
        startup_timeout=startup_timeout,
        log_file=log_file,
        snapshot=True,
        verify=verify_repository,
        admin_api=allow_admin_api,
        exit_timeout=exit_timeout,
        prepare=prepare,
    )
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        server.request_stop()  # only a flag: the main loop stops the server

    # Installed before anything is spawned: a signal during startup must not orphan a tritonserver.
    handled = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        if allow_admin_api:
            typer.echo(
                f"warning: --allow-admin-api: anyone who reaches {host} ports {http_port}/{grpc_port} can "
                "load and unload models, register shared memory and change log settings",
                err=True,
            )
        try:
            with Console(stderr=True).status("verifying a private copy and starting tritonserver..."):
                server.start()
        except ServerStopRequested:
            typer.echo(f"stopped ({_signal_name(received)}) before the server was ready", err=True)
            return
        typer.echo(
            f"serving a verified copy of {repository}: HTTP {server.http_url}  gRPC {server.grpc_url}"
            f"  (API: {'full' if allow_admin_api else 'inference, health, metadata'}; Ctrl-C to stop)",
            err=True,
        )
        for runtime in chosen:
            typer.echo(
                f"CPU engine: {runtime['engine']}/{runtime['precision']}"
                + (f" ({runtime['auto']})" if runtime.get("auto") else ""),
                err=True,
            )
        if server.metrics_url:
            typer.echo(f"metrics: {server.metrics_url}", err=True)
        code = server.wait()
        if code is None:
            t0 = time.monotonic()
            server.stop()
            typer.echo(f"stopped ({_signal_name(received)}) in {time.monotonic() - t0:.1f} s", err=True)
            return
        typer.echo(f"tritonserver log (last lines):\n{server.log_tail()}", err=True)
        raise ServerError(f"tritonserver exited unexpectedly with code {code}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_name(received: list[int]) -> str:
    import signal

    return signal.Signals(received[0]).name if received else "stop requested"
