"""Model card (``metadata.json`` + ``README.md``) and checksums of a version folder.

Every version folder carries ``SHA256SUMS`` (``sha256sum -c`` format) covering every other file in
it, ``metadata.json`` included; the repository manifest (:mod:`gliodeploy.export.publish`) covers the
configurations and every version. :func:`verify_repository` (in :mod:`gliodeploy.export.integrity`,
re-exported here) checks both, for ``gliodeploy verify`` and before ``gliodeploy serve``.
"""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from gliodeploy.export.integrity import (  # noqa: F401 - verification lives there; re-exported here
    CHECKSUMS,
    check_published_parameters,
    sha256,
    verify_repository,
    verify_version,
)

_PACKAGES = ("gliodeploy", "torch", "onnx", "onnxruntime", "numpy", "SimpleITK", "monai", "nvidia-pytriton")


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
    if card.get("runtime"):
        rt = card["runtime"]
        lines += [
            "",
            f"Runtime: ONNX IR version {rt['onnx_ir_version']}, opset {rt['onnx_opset']}; needs ONNX Runtime "
            f">= {rt['min_onnxruntime'] or 'unknown'} (Triton container >= {rt['min_triton'] or 'unknown'}).",
        ]
    if card.get("parity"):
        parity = card["parity"]
        same = (
            f"; same decisions at threshold {parity['decision_threshold']:.4g}"
            if parity.get("decision_threshold") is not None
            else ""
        )
        lines += ["", f"Parity vs PyTorch: max abs diff {parity['max_abs_diff']:.3g}{same}."]
    if card.get("reference_cases"):
        ref = card["reference_cases"]
        lines += [
            "",
            f"Reference cases: `{ref['file']}` holds {len(ref['cases'])} preprocessed scans with PyTorch's "
            f"fold and ensemble probabilities; `gliodeploy verify REPO --server URL` checks a running server "
            f"gives them within {ref['tolerance']:g} and the same decisions.",
        ]
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
