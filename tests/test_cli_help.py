"""Every command's --help shows every word of every help text (no markup may swallow brackets)."""

from __future__ import annotations

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from gliodeploy.cli import app as main_app
from gliodeploy.client.cli import app as client_app


def _commands() -> list[tuple[str, list[str], click.Command]]:
    out = []
    for prog, app in (("gliodeploy", main_app), ("gliodeploy-client", client_app)):
        group = typer.main.get_command(app)
        out.append((prog, [], group))
        for name, cmd in getattr(group, "commands", {}).items():
            out.append((prog, [name], cmd))
    return out


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize(
    ("app", "args", "command"),
    [(main_app if prog == "gliodeploy" else client_app, args, cmd) for prog, args, cmd in _commands()],
    ids=[" ".join([prog, *args]) for prog, args, _ in _commands()],
)
def test_help_keeps_every_word(app: typer.Typer, args: list[str], command: click.Command) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    texts = [command.help or ""] if not args else []
    texts += [getattr(p, "help", None) or "" for p in command.params]
    for text in filter(None, texts):
        first_paragraph = _flat(text.split("\n\n")[0])
        assert first_paragraph in shown, f"help text lost words: {first_paragraph!r}"
    assert "[default: ]" not in shown
    assert not re.search(r"\w \.(\s|$)", shown), "a word before ' .' was swallowed"
    assert "[:port]" in shown if "--url" in shown else True
