"""Packaging hygiene: one version, a license, a citation, typing marker, declared dependencies used."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import yaml

import gliodeploy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

#: Declared but not imported by name, and why. Everything else must be imported by gliodeploy/ or clients/.
INDIRECT = {
    "onnxruntime-gpu": "provides the same `onnxruntime` module with the CUDA provider",
    "onnxscript": "torch.onnx's dynamo exporter imports it",
    "opencv-python-headless": "medcam imports cv2 without declaring it",
    "tomli": "TOML reader on Python 3.10 (imported under a version guard)",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _imported_modules() -> set[str]:
    names: set[str] = set()
    for path in [*(ROOT / "gliodeploy").rglob("*.py"), *(ROOT / "clients").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_version_has_one_source() -> None:
    assert "version" not in PYPROJECT["project"], (
        "pyproject must read the version from gliodeploy/__init__.py"
    )
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gliodeploy.__version__"}
    assert md.version("gliodeploy") == gliodeploy.__version__


def test_license_citation_changelog_and_typing_marker() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == gliodeploy.__version__
    assert citation["license"] == "Apache-2.0" and citation["authors"] and citation["title"]
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert (ROOT / "gliodeploy" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["gliodeploy"]


def test_every_runtime_dependency_is_used() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra, requirements in extras.items():
        if extra != "dev":  # test and lint tools
            declared |= {_name(r) for r in requirements}
    modules_of: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_modules()
    unused = sorted(
        name for name in declared if name not in INDIRECT and not (modules_of.get(name, set()) & imported)
    )
    assert not unused, f"declared but never imported: {unused} (drop them or say why in INDIRECT)"
    assert "batchgenerators" not in declared  # v1: only pulled in by batchgeneratorsv2


def test_serving_pins_the_tested_pytriton_layout() -> None:
    serve = {_name(r): r for r in PYPROJECT["project"]["optional-dependencies"]["serve"]}
    spec = serve["nvidia-pytriton"]
    assert "<0.8" in spec and ">=0.7" in spec, spec
    assert md.version("nvidia-pytriton").startswith("0.7.")
