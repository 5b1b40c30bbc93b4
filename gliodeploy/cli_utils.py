"""Helpers shared by the two command-line programs (``gliodeploy`` and ``gliodeploy-client``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from gliodeploy.errors import GliodeployError


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app; a :class:`GliodeployError` becomes ``error: ...`` on stderr and its exit code.

    Tracebacks are for bugs, not for bad input: anything a user can cause is raised as a
    GliodeployError somewhere below and ends here as one clear line.
    """
    try:
        app(args=argv, standalone_mode=False)
    except GliodeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:  # raised by commands that want a specific exit code
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(1)
        raise


def lazy(module: str, attr: str) -> Callable[..., object]:
    """Import ``module.attr`` only when called, so that ``--help`` and the client never import torch."""

    def _call(*args: object, **kwargs: object) -> object:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return _call
