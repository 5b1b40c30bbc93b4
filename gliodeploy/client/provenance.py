"""The audit trail of one prediction: which bytes were read, which SUV inputs were used and where each
came from, which gliodeploy preprocessed the scan, and which model (checksum) and operating point decided.

Input digests (``Prediction.scan``):

- a NIfTI file: the SHA-256 of the file (``sha256sum scan.nii.gz``); its BIDS-PET sidecar and the
  participants.tsv / sessions.tsv that gave the weight get their own digest;
- a DICOM series: the SHA-256 of the ``sha256sum`` listing of its slice files sorted by name, i.e.
  ``cd SERIES_DIR && sha256sum $(ls SLICES | LC_ALL=C sort) | sha256sum`` over exactly the files read
  (a study folder's other series are left out). The listing keeps file boundaries and names, which a
  digest of the concatenated bytes would not.

Files are hashed right after they were read, in the same call. Never imports torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gliodeploy import __version__

#: How ``scan["sha256"]`` was computed, per input format (written beside the digest).
DIGEST_METHODS: dict[str, str] = {
    "nifti": "sha256 of the file",
    "dicom": "sha256 of the sha256sum listing of the series' slice files sorted by name",
}
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def series_sha256(files: Sequence[str | os.PathLike[str]], folder: str | os.PathLike[str]) -> tuple[str, int]:
    """Digest of a DICOM series (see the module docstring) and the total size of its files in bytes."""
    lines = []
    total = 0
    names = sorted(Path(os.path.relpath(f, folder)).as_posix() for f in files)
    for name in names:
        digest, size = file_sha256(Path(folder) / name)
        lines.append(f"{digest}  {name}\n")
        total += size
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest(), total


def input_facts(metadata: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """The digests of what a reader read (``PetVolume.metadata`` and ``source``), for ``Prediction.scan``."""
    fmt = metadata.get("format")
    out: dict[str, Any] = {"path": str(source)}
    if fmt == "dicom":
        folder = Path(source)
        files = metadata.get("files") or []
        out["sha256"], out["bytes"] = series_sha256(files, folder)
        out["n_files"] = len(files)
    else:
        out["sha256"], out["bytes"] = file_sha256(source)
    out["sha256_method"] = DIGEST_METHODS.get(str(fmt), DIGEST_METHODS["nifti"])
    if metadata.get("sidecar"):
        out["sidecar"] = str(metadata["sidecar"])
        out["sidecar_sha256"] = file_sha256(metadata["sidecar"])[0]
    weight = (metadata.get("suv_facts") or {}).get("weight_kg") or {}
    if weight.get("source") in ("participants_tsv", "sessions_tsv"):
        table = str(metadata.get("weight_source"))
        out["weight_table"] = table
        out["weight_table_sha256"] = file_sha256(table)[0]
    return out


def suv_block(metadata: Mapping[str, Any], units: str) -> dict[str, Any]:
    """The SUV inputs used (``{fact: {value, source, detail}}``) and the resulting units."""
    return {"units": units, "facts": dict(metadata.get("suv_facts") or {})}


def model_block(info: Any, model: str) -> dict[str, Any]:
    """The model that answered and its checksum, when the version answering is the one it names.

    ``info`` is a :class:`~gliodeploy.client.api.ModelInfo`; ``model`` the Triton model called.
    """
    published = info.checksum or {}
    checksum = published.get("sha256sums_sha256")
    note = None
    if not checksum:
        note = "not published by this model (exported before checksums were published)"
    elif str(published.get("version")) != str(info.version):
        note = f"the published checksum is version {published.get('version')}'s, not {info.version}'s"
        checksum = None
    block: dict[str, Any] = {
        "name": info.name,
        "called": model,
        "version": info.version,
        "checksum": checksum,
        "checksum_method": "sha256 of the version's SHA256SUMS",
        "exported_by": published.get("gliodeploy"),
    }
    if note:
        block["checksum_note"] = note
    return block


def provenance_block(info: Any, model: str, *, server_preprocess: bool) -> dict[str, Any]:
    """Which gliodeploy read and preprocessed the scan, which model and operating point decided."""
    if server_preprocess:
        exported = (info.checksum or {}).get("gliodeploy") or "unknown"
        preprocessed = f"server ({model}, geometry code of gliodeploy {exported})"
    else:
        preprocessed = f"client (gliodeploy {__version__})"
    return {
        "gliodeploy_version": __version__,  # read the scan and converted it to SUV
        "preprocessed_by": preprocessed,
        "model": model_block(info, model),
        "operating_point": info.operating_point or {"threshold": info.threshold, "method": "unpublished"},
    }
