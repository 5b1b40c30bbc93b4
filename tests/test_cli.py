"""The `gliodeploy` program: every command is registered, --help needs no torch, errors are one line."""

from __future__ import annotations

import subprocess
import sys

from gliodeploy.cli import COMMANDS


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command_without_importing_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from gliodeploy.cli import app; "
        "r = CliRunner().invoke(app, ['--help'], terminal_width=200); print(r.output); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name, _, _ in COMMANDS:
        assert name in proc.stdout
    assert proc.stdout.strip().endswith("NO-TORCH")


def test_unknown_command_and_version() -> None:
    bad = _run("no-such-command")
    assert bad.returncode == 2 and "No such command" in bad.stderr and "Traceback" not in bad.stderr
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.startswith("gliodeploy ")
