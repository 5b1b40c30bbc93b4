"""Integrity of a Triton model repository written by ``gliodeploy export``: Triton loads what export wrote.

Two levels of checksums, both in ``sha256sum -c`` format:

- ``<repo>/SHA256SUMS``, the repository manifest, written last by export, covers every file the server
  loads or a client trusts: each model's ``config.pbtxt`` and ``configs/*.pbtxt`` and every file of
  every version folder (their own ``SHA256SUMS`` included). Triton ignores files at the repository root.
- ``<repo>/<model>/<N>/SHA256SUMS`` covers one version folder, so a version copied alone still verifies.

Nothing else may exist: an extra model folder (Triton would load it and run its code), a staging folder
left by a killed export (Triton refuses to start), ``__pycache__`` beside the verified ``model.py``
(Python would run the bytecode instead), a symbolic link or a hidden file. Path-like configuration
parameters must name a file inside their version folder. :func:`verify_repository` checks all of it, so
verifying a byte-for-byte copy of a repository proves what a server started on that copy loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gliodeploy import contract
from gliodeploy.errors import ModelError
from gliodeploy.export.repository import MODELS, TARGETS, VERSION_RE, validate_configs, versions

ENSEMBLE = contract.ENSEMBLE_MODEL
CHECKSUMS = "SHA256SUMS"
#: Prefix of the staging folders that exports before the repository manifest left inside the repository.
LEGACY_STAGING_PREFIX = ".staging-"
_CONFIG_FILES = frozenset(f"{t}.pbtxt" for t in TARGETS[1:])
#: Parameter names whose value is a file: the python-backend models open them, the python backend itself
#: reads EXECUTION_ENV_PATH (a whole Python environment).
_PATH_SUFFIXES = ("_file", "_filename", "_path", "_dir", "_directory")
_PROFILE_HINT = (
    "a deployment that needs other instance groups, batching or accelerators re-exports with a profile "
    "(gliodeploy export RUN --profile export/cpu.toml; see export/*.toml) instead of editing a configuration"
)


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def format_sums(sums: dict[str, str]) -> str:
    """``sha256sum`` text of relative path -> digest, sorted by path."""
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))


def read_sums(path: Path) -> dict[str, str]:
    """Parse a ``SHA256SUMS`` file; ModelError names a missing file or a malformed line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name in sums:
            raise ModelError(f"{path}:{n}: malformed line {line!r}")
        sums[name] = digest
    return sums


def tree_files(folder: Path, exclude: Collection[str] = ()) -> list[str]:
    """Relative POSIX paths of every file below ``folder`` (hidden files and ``__pycache__`` included),
    except below the top-level folders named in ``exclude``."""
    out = []
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder:
            dirs[:] = [d for d in dirs if d not in exclude]
        dirs.sort()
        for name in files:
            out.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(out)


def staging_prefix(target: Path) -> str:
    """Name prefix of the staging folders an export of ``target`` builds beside it."""
    return f".{target.name}.staging-"


def previous_prefix(target: Path) -> str:
    """Name prefix under which an export's two-rename fallback parks the old state of ``target``."""
    return f".{target.name}.previous-"


# ---- layout: only what export writes ------------------------------------------------------------
def _not_ours(path: Path, what: str) -> ModelError:
    return ModelError(f"{path}: {what} not written by gliodeploy export: remove it (or re-run export)")


def _check_entry_type(path: Path, entry: os.DirEntry[str]) -> None:
    if entry.is_symlink():
        raise ModelError(
            f"{path}: symbolic link in the model repository (it could point anywhere): replace it by the "
            "file itself or re-run export"
        )
    if not entry.is_dir() and not entry.is_file():
        raise _not_ours(path, "special file")


def check_layout(repo: Path, *, for_export: bool = False) -> list[Path]:
    """Refuse anything in ``repo`` that ``gliodeploy export`` does not write; returns what export may drop.

    Allowed: the three model folders and the root ``SHA256SUMS``; in a model folder ``config.pbtxt``,
    ``configs/{cpu,local}.pbtxt`` and numeric version folders holding plain files only. With
    ``for_export`` (the old state of a repository an export is about to replace) staging folders of
    killed exports and ``__pycache__`` folders are returned instead of refused: they are derived or
    abandoned data the new state does not carry over.
    """
    droppable: list[Path] = []
    with os.scandir(repo) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = repo / entry.name
        if entry.name.startswith(LEGACY_STAGING_PREFIX):
            if for_export:
                droppable.append(path)
                continue
            raise ModelError(
                f"{path}: staging folder left by an interrupted export (Triton refuses to start with it): "
                "remove it or re-run export"
            )
        _check_entry_type(path, entry)
        if entry.name == CHECKSUMS and entry.is_file():
            continue
        if entry.name in MODELS and entry.is_dir():
            droppable += _check_model_folder(path, for_export=for_export)
            continue
        if entry.is_dir():
            raise ModelError(
                f"{path}: model folder not written by gliodeploy export (Triton would load it and run its "
                f"code): remove it; a gliodeploy repository holds only {', '.join(MODELS)}"
            )
        raise _not_ours(path, "file")
    if not for_export:
        for model in MODELS:
            if not (repo / model).is_dir():
                raise ModelError(f"{repo / model}: model folder is missing (re-run export)")
    return droppable


def _check_model_folder(model_dir: Path, *, for_export: bool) -> list[Path]:
    droppable: list[Path] = []
    with os.scandir(model_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = model_dir / entry.name
        _check_entry_type(path, entry)
        if entry.name == "config.pbtxt" and entry.is_file():
            continue
        if entry.name == "configs" and entry.is_dir():
            with os.scandir(path) as inner:
                for cfg in sorted(inner, key=lambda e: e.name):
                    _check_entry_type(path / cfg.name, cfg)
                    if not (cfg.is_file() and cfg.name in _CONFIG_FILES):
                        raise _not_ours(path / cfg.name, "configuration")
            continue
        if entry.is_dir() and VERSION_RE.match(entry.name):
            droppable += _check_version_folder(path, for_export=for_export)
            continue
        raise _not_ours(path, "folder" if entry.is_dir() else "file")
    return droppable


def _check_version_folder(folder: Path, *, for_export: bool) -> list[Path]:
    droppable: list[Path] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = folder / entry.name
        _check_entry_type(path, entry)
        if entry.name == "__pycache__":
            if for_export:
                droppable.append(path)
                continue
            raise ModelError(
                f"{path}: Python bytecode beside the verified model.py (the server would run it instead): "
                "remove it (a Triton started on this folder itself wrote it; `gliodeploy serve` serves a "
                "private copy, and a read-only mount keeps a container from writing it)"
            )
        if entry.is_dir():
            raise _not_ours(path, "folder")
        if entry.name.startswith("."):
            raise _not_ours(path, "hidden file")
    return droppable


# ---- path parameters ------------------------------------------------------------------------------
def unsafe_model_path(value: str) -> str | None:
    """Why ``value`` cannot name a file inside a version folder (None when it can)."""
    if not value:
        return "is empty"
    if "\x00" in value or "$" in value:
        return "contains a variable or a NUL byte"
    if value.startswith(("/", "\\")) or os.path.isabs(value) or (len(value) > 1 and value[1] == ":"):
        return "is an absolute path"
    norm = posixpath.normpath(value.replace("\\", "/"))
    if norm == "." or norm == ".." or norm.startswith("../"):
        return "escapes its version folder"
    return None


def _path_fields(cfg: Any) -> list[tuple[str, str]]:
    fields = []
    if cfg.default_model_filename:
        fields.append(("default_model_filename", cfg.default_model_filename))
    fields += [(f"cc_model_filenames[{k!r}]", v) for k, v in sorted(cfg.cc_model_filenames.items())]
    fields += [
        (f"parameter {k!r}", p.string_value)
        for k, p in sorted(cfg.parameters.items())
        if k.lower().endswith(_PATH_SUFFIXES)
    ]
    return fields


def check_path_parameters(repo: Path, configs: dict[Path, Any]) -> None:
    """Every file a configuration names must be a plain relative path inside each of its version folders."""
    for path, cfg in configs.items():
        model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
        for label, value in _path_fields(cfg):
            problem = unsafe_model_path(value)
            for v in versions(model_dir):
                if problem:
                    break
                version_dir = (model_dir / str(v)).resolve()
                target = (version_dir / value).resolve()
                if target == version_dir or not target.is_relative_to(version_dir):
                    problem = "escapes its version folder"
            if problem:
                raise ModelError(
                    f"{path}: {label} = {value!r} {problem}: a model may only open files of its own "
                    "version folder (re-run export)"
                )


# ---- checksums --------------------------------------------------------------------------------------
def verify_version(
    folder: Path, digests: dict[str, str] | None = None, *, exclude: Collection[str] = ()
) -> dict[str, str]:
    """Check a version folder against its ``SHA256SUMS``: missing, extra or changed files raise ModelError.

    ``digests`` (relative path -> digest, already computed) avoids reading the files twice; ``exclude``
    names top-level folders left out (an export drops ``__pycache__``). Returns the verified digests,
    ``SHA256SUMS`` itself included.
    """
    sums_file = folder / CHECKSUMS
    if not sums_file.is_file():
        raise ModelError(f"{folder}: no {CHECKSUMS}; cannot verify this version")
    expected = read_sums(sums_file)
    present = set(tree_files(folder, exclude)) - {CHECKSUMS}
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelError(
            f"file(s) listed in {sums_file} are missing: {', '.join(str(folder / n) for n in missing)}"
        )
    extra = sorted(present - set(expected))
    if extra:
        raise ModelError(
            f"file(s) not in {sums_file} (not written by gliodeploy export: remove them): "
            + ", ".join(str(folder / n) for n in extra)
        )
    actual = {}
    for name in [*sorted(expected), CHECKSUMS]:
        actual[name] = digests[name] if digests is not None else sha256(folder / name)
        if name != CHECKSUMS and actual[name] != expected[name]:
            raise ModelError(f"checksum mismatch: {folder / name} was modified after export")
    return actual


def _compare_manifest(repo: Path, manifest: dict[str, str], digests: dict[str, str]) -> None:
    missing = sorted(set(manifest) - set(digests))
    if missing:
        raise ModelError(
            f"file(s) listed in {repo / CHECKSUMS} are missing: {', '.join(str(repo / n) for n in missing)}"
        )
    extra = sorted(set(digests) - set(manifest))
    if extra:
        raise ModelError(
            f"file(s) not in {repo / CHECKSUMS} (not written by gliodeploy export: remove them): "
            + ", ".join(str(repo / n) for n in extra)
        )
    for name in sorted(manifest):
        if digests[name] == manifest[name]:
            continue
        if name.endswith(".pbtxt"):
            raise ModelError(
                f"checksum mismatch: {repo / name} was modified after export (the server loads every "
                f"configuration and clients trust them, so {repo / CHECKSUMS} covers them): {_PROFILE_HINT}"
            )
        raise ModelError(f"checksum mismatch: {repo / name} was modified after export")


def verify_repository(repo: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Verify every byte of a repository written by ``gliodeploy export``; returns model -> versions.

    Layout (nothing export does not write), the repository manifest, every configuration (parses,
    names, path parameters, the decision parameters equal the latest version's metadata) and every
    version's own checksums. Raises :class:`ModelError` naming the first problem.
    """
    repo = Path(repo)
    if not repo.is_dir():
        real = Path(os.path.realpath(repo))
        parked = sorted(real.parent.glob(previous_prefix(real) + "*"))
        hint = f" (an export was interrupted while swapping it: rename {parked[0]} back)" if parked else ""
        raise ModelError(f"model repository not found: {repo}{hint}")
    check_layout(repo)
    manifest_path = repo / CHECKSUMS
    if not manifest_path.is_file():
        raise ModelError(
            f"{manifest_path} is missing: this repository has no manifest covering its configurations "
            "(written by an older gliodeploy?); re-run `gliodeploy export` into it to add one (versions kept)"
        )
    manifest = read_sums(manifest_path)
    configs = validate_configs(repo)
    check_path_parameters(repo, configs)
    out: dict[str, list[int]] = {}
    for model in MODELS:
        found = versions(repo / model)
        if not found:
            raise ModelError(f"{repo / model}: no version folder")
        out[model] = found
    check_published_parameters(repo, configs, max(out[ENSEMBLE]))
    digests = {name: sha256(repo / name) for name in tree_files(repo) if name != CHECKSUMS}
    for model, found in out.items():  # first: a version's own SHA256SUMS names an extra file best
        for v in found:
            prefix = f"{model}/{v}/"
            verify_version(
                repo / model / str(v),
                {k[len(prefix) :]: d for k, d in digests.items() if k.startswith(prefix)},
            )
    _compare_manifest(repo, manifest, digests)
    return out


def model_checksum(version_dir: Path, version: int) -> dict[str, Any]:
    """What :data:`gliodeploy.contract.PARAM_MODEL_CHECKSUM` publishes for a written version folder: the
    SHA-256 of its ``SHA256SUMS`` (one digest pinning every file of the version)."""
    from gliodeploy import __version__

    return {
        "version": int(version),
        "sha256sums_sha256": sha256(version_dir / CHECKSUMS),
        "gliodeploy": __version__,
    }


def model_checksum_json(version_dir: Path, version: int) -> str:
    """:func:`model_checksum` as the configuration parameter's JSON text."""
    return json.dumps(model_checksum(version_dir, version), sort_keys=True)


def check_published_parameters(repo: Path, configs: dict[Path, Any], version: int) -> None:
    """The decision rule and preprocessing a client reads from the configurations must be the ones in
    the served (latest) version's ``metadata.json``, which its ``SHA256SUMS`` covers.

    The manifest covers the configurations too; this check names the edited parameter instead of
    only the edited file.
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
        _check_model_checksum(path, cfg, repo / ENSEMBLE / str(version), version)


def _check_model_checksum(path: Path, cfg: Any, version_dir: Path, version: int) -> None:
    """The published model checksum (absent in exports older than it) must name the served version."""
    if contract.PARAM_MODEL_CHECKSUM not in cfg.parameters:
        return
    raw = cfg.parameters[contract.PARAM_MODEL_CHECKSUM].string_value
    try:
        got = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelError(
            f"{path}: parameter {contract.PARAM_MODEL_CHECKSUM!r} is malformed: {raw[:80]!r}"
        ) from None
    want = model_checksum(version_dir, version)
    if not isinstance(got, dict) or {k: got.get(k) for k in ("version", "sha256sums_sha256")} != {
        k: want[k] for k in ("version", "sha256sums_sha256")
    }:
        raise ModelError(
            f"{path}: parameter {contract.PARAM_MODEL_CHECKSUM!r} does not match version {version}'s "
            "SHA256SUMS (edited after export?): re-export instead of editing a configuration"
        )
