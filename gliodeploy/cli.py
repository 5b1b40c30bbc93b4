"""The ``gliodeploy`` command: synthetic cohort, training, evaluation, explanation, export, serving.

Each command lives in ``gliodeploy/<package>/commands.py`` and imports its heavy dependencies
inside the function, so ``gliodeploy --help`` is instant and needs no torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from gliodeploy.cli_utils import LOG_FILE, VERBOSE, configure_logging, run_app, version_option

app = typer.Typer(
    name="gliodeploy",
    help=(
        "Train, evaluate, explain, package and serve 3D CNNs that predict glioma recurrence vs "
        "treatment-related change on static 18F-FDOPA PET.\n\n"
        "Typical flow: synth (or your own manifest) -> train -> evaluate -> explain -> export -> serve; "
        "then query the server with gliodeploy-client."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help shows every word: rich markup would swallow "[data].manifest", "[:port]"
)

# (command name, module, function). Order = order in --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "gliodeploy.synth.commands", "synth"),
    ("preprocess", "gliodeploy.preprocessing.commands", "preprocess"),
    ("train", "gliodeploy.training.commands", "train"),
    ("distill", "gliodeploy.training.commands", "distill"),
    ("evaluate", "gliodeploy.evaluation.commands", "evaluate"),
    ("explain", "gliodeploy.explain.commands", "explain"),
    ("export", "gliodeploy.export.commands", "export"),
    ("verify", "gliodeploy.export.commands", "verify"),
    ("serve", "gliodeploy.serving.commands", "serve"),
    ("predict", "gliodeploy.predict.commands", "predict"),
    ("demo", "gliodeploy.demo", "demo"),
    ("sweep", "gliodeploy.cluster.commands", "sweep"),  # a group: sweep run / status / cache / finalize
    ("pack-env", "gliodeploy.cluster.commands", "pack_env"),
]

for _name, _module, _attr in COMMANDS:
    _obj = getattr(importlib.import_module(_module), _attr)
    if isinstance(_obj, typer.Typer):
        app.add_typer(_obj, name=_name)
    else:
        app.command(_name)(_obj)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = version_option("gliodeploy"),
    verbose: int = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Options of the program itself, given before the command: ``gliodeploy -v --log-file F train ...``."""
    ctx.call_on_close(configure_logging(verbose, log_file))


def main() -> None:
    """Console-script entry point."""
    run_app(app)


if __name__ == "__main__":
    main()
