"""Helpers shared by the two command-line programs (``gliodeploy`` and ``gliodeploy-client``)."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from gliodeploy import __version__
from gliodeploy.errors import GliodeployError, InputError


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


# ---- conventions shared by both programs' roots and commands ------------------------------------------
#: Root of the logger hierarchy every module logs under (``logging.getLogger(__name__)``).
LOGGER_NAME = "gliodeploy"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

OLD_VERSION_HINT = "--version is the program's version; use --model-version to choose the model version"


def version_option(prog: str) -> Any:
    """The root ``--version`` flag: print ``PROG VERSION`` and exit before any command runs."""

    def _print(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {__version__}")
            raise typer.Exit(0)

    return typer.Option(
        False, "--version", is_eager=True, callback=_print, help="Print the program's version and exit."
    )


def _refuse_old_version(value: str | None) -> None:
    if value is not None:
        raise InputError(OLD_VERSION_HINT)


#: A hidden ``--version VALUE`` on commands that take ``--model-version``: the old spelling fails with a
#: hint instead of being read as something else (no help text: hidden options stay out of --help).
OLD_VERSION = typer.Option(None, "--version", hidden=True, is_eager=True, callback=_refuse_old_version)

VERBOSE = typer.Option(
    0,
    "--verbose",
    "-v",
    count=True,
    show_default=False,
    help="Log what happens on stderr: -v INFO (steps, retries, series choice), -vv DEBUG (timings).",
)
LOG_FILE = typer.Option(
    None,
    "--log-file",
    dir_okay=False,
    metavar="FILE",
    help="Append a DEBUG log (time, level, logger, message) of this run to FILE, whatever -v says.",
)


def configure_logging(verbosity: int, log_file: Path | None) -> Callable[[], None]:
    """Send the ``gliodeploy`` loggers to stderr (``-v`` INFO, ``-vv`` DEBUG) and/or to ``log_file`` (DEBUG).

    Returns the function that removes and closes the handlers (the root callback registers it on
    its context, so in-process runs such as tests do not pile handlers up). Without ``-v`` and a log file
    nothing is configured: normal output stays exactly as it was. Raises :class:`InputError` when the
    log file cannot be opened.
    """
    logger = logging.getLogger(LOGGER_NAME)
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = []
    if verbosity > 0:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
        handlers.append(stream)
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--log-file {log_file}: cannot write it ({exc.strerror or exc})") from exc
        file_handler.setLevel(logging.DEBUG)  # a log file is for diagnosis: keep everything
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if handlers:
        logger.setLevel(min(h.level for h in handlers))

    def teardown() -> None:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        if handlers:
            logger.setLevel(logging.NOTSET)

    return teardown
