"""Model card (``metadata.json`` + ``README.md``) and checksums of a version folder; repository verification.

Every version folder carries ``SHA256SUMS`` (``sha256sum -c`` format) covering every other file in
it, ``metadata.json`` included, so any edited, truncated or swapped file is detected by
:func:`verify_repository` (used by ``gliodeploy verify`` and before ``gliodeploy serve``).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from gliodeploy import contract
from gliodeploy.errors import ModelError
from gliodeploy.export.repository import MODELS, validate_configs, versions

ENSEMBLE = contract.ENSEMBLE_MODEL

CHECKSUMS = "SHA256SUMS"
_PACKAGES = ("gliodeploy", "torch", "onnx", "onnxruntime", "numpy", "SimpleITK", "monai", "nvidia-pytriton")


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that produced/serve the model (None = not installed)."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path) -> dict[str, str]:
    """Write ``SHA256SUMS`` for every file of ``folder``; returns relative path -> digest."""
    sums = {p.relative_to(folder).as_posix(): sha256(p) for p in _files(folder)}
    text = "".join(f"{digest}  {name}\n" for name, digest in sums.items())
    (folder / CHECKSUMS).write_text(text, encoding="utf-8")
    return sums


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """Write ``README.md``, then ``metadata.json`` (with the digests of the other files), into ``folder``.

    Called on a staging folder, before it is published; ``SHA256SUMS`` is written last.
    """
    (folder / "README.md").write_text(render_readme(card), encoding="utf-8")
    card = {**card, "files": {p.relative_to(folder).as_posix(): sha256(p) for p in _files(folder)}}
    (folder / "metadata.json").write_text(
        json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    write_checksums(folder)
    for path in folder.rglob("*"):  # readable by the (non-root) user of Triton containers
        path.chmod(0o755 if path.is_dir() else 0o644)


def render_readme(card: dict[str, Any]) -> str:
    """Human-readable model card (Markdown) from the metadata dictionary."""
    lines = [
        f"# {card['model']} version {card['version']}",
        "",
        card.get("description", ""),
        "",
        f"- Exported: {card.get('exported_at', '?')} from run `{card.get('run', '?')}`",
        f"- Architecture: {card.get('architecture', '-')}; folds: {card.get('folds', '-')}",
        f"- Labels: {card.get('label_names')}; decision threshold: {card.get('threshold')}",
        "",
        *_operating_point_lines(card),
        "## Tensors",
        "",
        "| direction | name | type | shape |",
        "|---|---|---|---|",
    ]
    for direction in ("inputs", "outputs"):
        for t in card.get(direction, []):
            lines.append(f"| {direction[:-1]} | `{t['name']}` | {t['datatype']} | {t['shape']} |")
    if card.get("parity"):
        lines += ["", f"Parity vs PyTorch: max abs diff {card['parity']['max_abs_diff']:.3g}."]
    if card.get("metrics"):
        lines += [
            "",
            "## Metrics (from the run's evaluation)",
            "",
            "```json",
            json.dumps(card["metrics"], indent=2),
        ]
        lines += ["```"]
    lines += [
        "",
        "## Preprocessing",
        "",
        "```json",
        json.dumps(card.get("preprocessing"), indent=2),
        "```",
        "",
        "Research software: not a medical device. Checksums of every file are in `SHA256SUMS`.",
        "",
    ]
    return "\n".join(lines)


def _operating_point_lines(card: dict[str, Any]) -> list[str]:
    op = card.get("operating_point")
    if not op:
        return []
    from gliodeploy.evaluation.operating_point import describe

    validation = (card.get("validation") or {}).get("selection", op.get("validation_mode"))
    return [
        "## Operating point",
        "",
        f"- {describe(op)}",
        f"- Chosen on: {op.get('fitted_on')}",
        f"- Out-of-fold models: {validation}",
        "- Served probability: the mean of the folds' probabilities, compared with the threshold unchanged.",
        "",
    ]


def verify_version(folder: Path) -> None:
    """Check a version folder against its ``SHA256SUMS``: missing, extra or changed files raise ModelError."""
    sums_file = folder / CHECKSUMS
    if not sums_file.is_file():
        raise ModelError(f"{folder}: no {CHECKSUMS}; cannot verify this version")
    expected: dict[str, str] = {}
    for n, line in enumerate(sums_file.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ModelError(f"{sums_file}:{n}: malformed line {line!r}")
        expected[name] = digest
    present = {p.relative_to(folder).as_posix() for p in _files(folder) if "__pycache__" not in p.parts}
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelError(f"{folder}: file(s) missing: {', '.join(missing)}")
    extra = sorted(present - set(expected))
    if extra:
        raise ModelError(f"{folder}: file(s) not in {CHECKSUMS}: {', '.join(extra)}")
    for name, digest in expected.items():
        if sha256(folder / name) != digest:
            raise ModelError(f"checksum mismatch: {folder / name} was modified after export")


def verify_repository(repo: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Verify configurations and every version's checksums; returns model -> verified versions."""
    repo = Path(repo)
    configs = validate_configs(repo)
    out: dict[str, list[int]] = {}
    for model in MODELS:
        found = versions(repo / model)
        if not found:
            raise ModelError(f"{repo / model}: no version folder")
        for v in found:
            verify_version(repo / model / str(v))
        out[model] = found
    check_published_parameters(repo, configs, max(out[ENSEMBLE]))
    return out


def check_published_parameters(repo: Path, configs: dict[Path, Any], version: int) -> None:
    """The decision rule and preprocessing a client reads from the configurations must be the ones in
    the served (latest) version's ``metadata.json``, which its ``SHA256SUMS`` covers.

    Configurations are not hashed (deployments legitimately change instance groups or batching), but
    these parameters decide every answer: an edited threshold or preprocessing is refused.
    """
    meta_path = repo / ENSEMBLE / str(version) / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from exc
    expected = {
        contract.PARAM_THRESHOLD: meta.get("threshold"),
        contract.PARAM_PREPROCESSING: meta.get("preprocessing"),
        contract.PARAM_OPERATING_POINT: meta.get("operating_point"),
    }
    for path, cfg in configs.items():
        if path.parent.name != ENSEMBLE and path.parent.parent.name != ENSEMBLE:
            continue
        for key, want in expected.items():
            if want is None:
                continue  # versions exported before this parameter existed
            if key not in cfg.parameters:
                raise ModelError(f"{path}: parameter {key!r} is missing (exported version {version} has it)")
            raw = cfg.parameters[key].string_value
            try:
                got = float(raw) if key == contract.PARAM_THRESHOLD else json.loads(raw)
            except (ValueError, json.JSONDecodeError):
                raise ModelError(f"{path}: parameter {key!r} is malformed: {raw[:80]!r}") from None
            if got != want:
                raise ModelError(
                    f"{path}: parameter {key!r} differs from version {version}'s metadata.json "
                    "(edited after export?): re-export instead of editing a configuration"
                )
