"""The package runs on Python 3.10 (``requires-python = ">=3.10"``): no 3.11-only syntax or stdlib import.

Two checks: every module compiles under a real Python 3.10 interpreter when one is installed (pyenv's,
found on this machine; skipped elsewhere), and an ``ast`` scan, run everywhere, refuses the 3.11-only
names and syntax a 3.11 test run cannot notice (``tomllib`` outside a version guard, ``datetime.UTC``,
``except*``, ``StrEnum``, ``typing.Self``...).
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from datetime import datetime, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gliodeploy"

#: module -> names added in Python 3.11 (or later) that a 3.10 import of the module lacks.
NEW_NAMES: dict[str, set[str]] = {
    "datetime": {"UTC"},
    "enum": {"StrEnum", "ReprEnum", "verify", "EnumCheck", "FlagBoundary", "member", "nonmember"},
    "typing": {
        "Self",
        "LiteralString",
        "Never",
        "assert_never",
        "assert_type",
        "reveal_type",
        "Required",
        "NotRequired",
        "TypeVarTuple",
        "Unpack",
        "dataclass_transform",
        "override",
    },
    "asyncio": {"TaskGroup", "timeout", "Runner"},
    "hashlib": {"file_digest"},
    "contextlib": {"chdir"},
    "operator": {"call"},
    "math": {"exp2", "cbrt"},
}
NEW_MODULES = {"tomllib", "wsgiref.types"}
NEW_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True inside ``try: ... except ImportError/ModuleNotFoundError`` or ``if sys.version_info ...``."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            names = {ast.unparse(h.type) for h in parent.handlers if h.type is not None}
            if names & {"ImportError", "ModuleNotFoundError", "(ImportError, ModuleNotFoundError)"}:
                return True
        if isinstance(parent, ast.If) and "version_info" in ast.unparse(parent.test):
            return True
        child, parent = parent, parents.get(parent)
    return False


def py311_findings(source: str, name: str) -> list[str]:
    """3.11-only imports, attributes and syntax in one module's source, as ``name:line: what``."""
    tree = ast.parse(source, name)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if type(node).__name__ == "TryStar":  # except* (ast.TryStar exists from 3.11 on)
            found.append(f"{where}: except* (3.11)")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in NEW_MODULES and not _guarded(node, parents):
                    found.append(f"{where}: import {alias.name} without a 3.10 fallback")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEW_MODULES and not _guarded(node, parents):
                found.append(f"{where}: from {node.module} import ... without a 3.10 fallback")
            new = {a.name for a in node.names} & NEW_NAMES.get(node.module, set())
            if new and not _guarded(node, parents):
                found.append(f"{where}: from {node.module} import {', '.join(sorted(new))} (3.11)")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in NEW_NAMES.get(node.value.id, set()) and not _guarded(node, parents):
                found.append(f"{where}: {node.value.id}.{node.attr} (3.11)")
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS and not _guarded(node, parents):
            found.append(f"{where}: {node.id} (3.11)")
    return found


def test_package_has_no_unguarded_311_only_usage() -> None:
    found = [f for p in _modules() for f in py311_findings(p.read_text("utf-8"), str(p.relative_to(ROOT)))]
    assert not found, "3.11-only usage breaks Python 3.10:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tomllib\n", "import tomllib without a 3.10 fallback"),
        ("from datetime import UTC\n", "from datetime import UTC (3.11)"),
        ("import datetime\nx = datetime.UTC\n", "datetime.UTC (3.11)"),
        ("from enum import StrEnum\n", "from enum import StrEnum (3.11)"),
        ("from typing import Self\n", "from typing import Self (3.11)"),
        ("raise ExceptionGroup('x', [])\n", "ExceptionGroup (3.11)"),
    ],
)
def test_scan_catches_311_only_usage(source: str, expected: str) -> None:
    assert any(expected in f for f in py311_findings(source, "m.py")), py311_findings(source, "m.py")


def test_scan_accepts_guarded_tomllib() -> None:
    guarded = [
        "try:\n    import tomllib\nexcept ModuleNotFoundError:\n    import tomli as tomllib\n",
        "import sys\nif sys.version_info >= (3, 11):\n    import tomllib\n"
        "else:\n    import tomli as tomllib\n",
    ]
    assert [py311_findings(s, "m.py") for s in guarded] == [[], []]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ast.TryStar exists from 3.11 on")
def test_scan_catches_except_star() -> None:
    source = "try:\n    pass\nexcept* ValueError:\n    pass\n"
    assert py311_findings(source, "m.py") == ["m.py:1: except* (3.11)"]


def _python310() -> str | None:
    """A working Python 3.10 interpreter (PATH, then pyenv's versions), else None."""
    candidates = [shutil.which("python3.10") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.10*", "bin", "python3.10")))
    for exe in filter(None, candidates):
        try:
            out = subprocess.run(
                [exe, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":  # a pyenv shim without 3.10 active fails
            return exe
    return None


def test_every_module_compiles_under_python_310() -> None:
    exe = _python310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter here (the ast scan above still runs)")
    script = (
        "import sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
        "    except SyntaxError as exc:\n"
        "        bad.append(f'{path}:{exc.lineno}: {exc.msg}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run(
        [exe, "-c", script, *map(str, _modules())], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"syntax Python 3.10 cannot read:\n{out.stdout}{out.stderr}"


def test_iso_times_with_z_suffix_parse_as_on_311() -> None:
    """``fromisoformat`` accepts a trailing Z only from 3.11 on; ``parse_time`` must not depend on it."""
    from gliodeploy.io.suv import parse_time

    assert parse_time("2024-03-01T10:15:00Z", field="t") == datetime(2024, 3, 1, 10, 15)
    assert parse_time("10:15:00Z", field="t") == time(10, 15)
