"""BIDS-PET metadata around a NIfTI file: JSON sidecar, subject/session entities, participants.tsv weight."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from gliodeploy.errors import InputError, SuvError

#: participants.json / sessions.json ``Units`` of the weight column -> kg.
WEIGHT_UNITS_KG: dict[str, float] = {"kg": 1.0, "g": 1e-3, "lb": 0.45359237, "lbs": 0.45359237}


def nifti_stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_sidecar(path: Path) -> Path | None:
    """The BIDS sidecar beside ``path``: ``<stem>.json`` first, then ``<stem>_pet.json``."""
    stem = nifti_stem(path)
    for candidate in (path.with_name(f"{stem}.json"), path.with_name(f"{stem}_pet.json")):
        if candidate.is_file():
            return candidate
    return None


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising :class:`InputError` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read JSON sidecar: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a JSON sidecar must hold an object, got {type(data).__name__}")
    return data


def entity(path: Path, key: str) -> str | None:
    """Value of a BIDS entity (``sub``, ``ses``) in the file name, else in its parent folders."""
    pattern = re.compile(rf"(?:^|_){key}-([A-Za-z0-9]+)")
    for part in (path.name, *(p.name for p in path.parents)):
        match = pattern.search(part)
        if match:
            return match.group(1)
    return None


def find_participants_tsv(path: Path) -> Path | None:
    """Walk up from ``path`` to the first folder holding ``participants.tsv`` (the dataset root)."""
    for folder in path.resolve().parents:
        candidate = folder / "participants.tsv"
        if candidate.is_file():
            return candidate
    return None


def _weight_units(tsv: Path) -> float:
    """kg per unit of the ``weight`` column, from the TSV's JSON data dictionary (kg by default)."""
    dictionary = tsv.with_suffix(".json")
    if not dictionary.is_file():
        return 1.0
    units = read_json(dictionary).get("weight", {})
    units = units.get("Units") if isinstance(units, dict) else None
    if units is None:
        return 1.0
    factor = WEIGHT_UNITS_KG.get(str(units).strip().lower())
    if factor is None:
        raise SuvError(f"{dictionary}: weight Units {units!r} is not one of {sorted(WEIGHT_UNITS_KG)}")
    return factor


def lookup_weight(tsv: Path, id_column: str, wanted: str) -> float | None:
    """Weight in kg of row ``wanted`` (e.g. ``sub-01``) of a BIDS TSV; ``None`` if absent or ``n/a``.

    Raises :class:`SuvError` when the value is not a number.
    """
    try:
        with tsv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{tsv}: cannot read: {exc}") from exc
    if not rows:
        return None
    columns = rows[0].keys()
    if id_column not in columns:
        raise InputError(f"{tsv}: no {id_column!r} column (columns: {', '.join(columns)})")
    if "weight" not in columns:  # no weight recorded here: the caller looks elsewhere or says so
        return None
    for row in rows:
        if (row.get(id_column) or "").strip() != wanted:
            continue
        text = (row.get("weight") or "").strip()
        if text.lower() in {"", "n/a", "na", "nan"}:
            return None
        try:
            value = float(text)
        except ValueError as exc:
            raise SuvError(f"{tsv}: weight of {wanted} is not a number: {text!r}") from exc
        if not math.isfinite(value):
            raise SuvError(f"{tsv}: weight of {wanted} is not finite: {text!r}")
        return value * _weight_units(tsv)
    return None


def bids_weight(
    path: Path, subject: str | None, participants_tsv: Path | None
) -> tuple[float | None, str | None]:
    """Body weight (kg) of ``subject`` and where it came from.

    The session's ``sub-X_sessions.tsv`` wins over ``participants.tsv`` (weight can change between
    sessions). ``participants_tsv`` overrides the search up the folders from ``path``.
    """
    if subject is None:
        return None, None
    participant = subject if subject.startswith("sub-") else f"sub-{subject}"
    session = entity(path, "ses")
    tsv = participants_tsv if participants_tsv is not None else find_participants_tsv(path)
    if participants_tsv is not None and not participants_tsv.is_file():
        raise InputError(f"participants file {participants_tsv} does not exist")
    if session is not None:
        # sub-X_sessions.tsv lives in the subject folder, an ancestor of the image.
        for folder in path.resolve().parents:
            sessions = folder / f"{participant}_sessions.tsv"
            if folder.name == participant and sessions.is_file():
                weight = lookup_weight(sessions, "session_id", f"ses-{session}")
                if weight is not None:
                    return weight, str(sessions)
    if tsv is None:
        return None, None
    weight = lookup_weight(tsv, "participant_id", participant)
    return weight, (str(tsv) if weight is not None else None)
