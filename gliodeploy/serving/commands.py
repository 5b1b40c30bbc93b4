"""``gliodeploy serve``: the bundled Triton server on a model repository, until Ctrl-C."""

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
) -> None:
    """Verify REPOSITORY, then serve it with the Triton server bundled in nvidia-pytriton until Ctrl-C.

    The bundled server has the python backend only, hence the `local` configurations (ONNX Runtime
    on CPU inside Triton). On a GPU host use NVIDIA's Triton container instead (docker/README.md).
    """
    import signal

    from rich.console import Console

    from gliodeploy.export.modelcard import verify_repository
    from gliodeploy.serving.server import TritonServer

    verify_repository(repository)
    console = Console(stderr=True)
    server = TritonServer(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        host=host,
        metrics=metrics,
        model_config_name=None if config_name == "gpu" else config_name,
        startup_timeout=startup_timeout,
    )
    with console.status("starting tritonserver..."):
        server.start()
    try:
        console.print(
            f"serving {repository}: HTTP {server.http_url}  gRPC {server.grpc_url}  (Ctrl-C to stop)"
        )
        if server.metrics_url:
            console.print(f"metrics: {server.metrics_url}")
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        code = server.wait()
        if code not in (0, -signal.SIGINT):
            console.print(f"tritonserver exited with code {code}:\n{server.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
