"""Helpers shared by the two command-line programs (``gliodeploy`` and ``gliodeploy-client``)."""

from __future__ import annotations

import sys
import warnings

import typer

from gliodeploy.errors import GliodeployError


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app; a :class:`GliodeployError` becomes ``error: ...`` on stderr and its exit code.

    Tracebacks are for bugs, not for bad input: anything a user can cause is raised as a
    GliodeployError somewhere below and ends here as one clear line.
    """
    warnings.formatwarning = _one_line_warning
    try:
        app(args=argv)  # standalone mode: click handles --help, usage errors and exit codes
    except GliodeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """Warnings for users read ``warning: ...`` on one line, without the source line that raised them."""
    return f"warning: {message}\n"
