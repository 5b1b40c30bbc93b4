"""``gliodeploy-client``: send PET scans to a gliodeploy Triton server."""

from __future__ import annotations

import typer

from gliodeploy.cli_utils import run_app

app = typer.Typer(
    name="gliodeploy-client",
    help="Send 18F-FDOPA PET scans to a gliodeploy Triton server and get a recurrence probability.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main() -> None:
    """Console-script entry point."""
    run_app(app)
