"""Preprocess each scan once and cache it: ``<cache_root>/<config fingerprint>/<subject>.npz``.

An entry stores the masked SUV array on the model grid ``[x, y, z]`` (float32), the brain mask, the
grid's geometry (origin and spacing in LPS mm: the grid is centred on each scan's brain, so it differs
per scan) and the SHA-256 of the input file(s); it is reused only if the input hash still matches, so
editing a scan or changing the preprocessing (another fingerprint folder) never serves a stale volume.
Entries written before the geometry was stored are rebuilt once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.data.manifest import ManifestRow
from gliodeploy.errors import InputError
from gliodeploy.utils.atomic import atomic_path


def input_hash(path: str | Path) -> str:
    """SHA-256 of a file, or of every file (relative name + bytes) under a DICOM series folder."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path}: empty image folder")
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CachedVolume:
    """A preprocessed scan loaded from the cache."""

    array: np.ndarray  # [x, y, z] float32 masked SUV
    mask: np.ndarray  # [x, y, z] uint8
    source_hash: str
    origin: tuple[float, float, float] | None = None  # LPS mm of voxel (0, 0, 0); None in old entries
    spacing: tuple[float, float, float] | None = None  # mm


def load_cached(path: str | Path) -> CachedVolume:
    """Load one cache entry."""
    try:
        with np.load(path) as z:
            geometry = {
                k: tuple(float(v) for v in z[f"grid_{k}"])
                for k in ("origin", "spacing")
                if f"grid_{k}" in z.files
            }
            return CachedVolume(z["array"], z["mask"], str(z["source_hash"]), **geometry)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"corrupt cache entry {path}: {exc}; delete it to rebuild") from exc


def cache_dir(cache_root: str | Path, cfg: Any) -> Path:
    """Folder of the entries for one preprocessing configuration."""
    return Path(cache_root) / cfg.fingerprint()


def cache_entry(folder: str | Path, subject: str) -> Path:
    """``<folder>/<subject>.npz``, refused (:class:`InputError`) unless it lies directly in ``folder``.

    Manifest validation already refuses unsafe subjects; this is the second line of defence for rows
    built elsewhere, so that a subject such as ``../../x`` can never write outside the cache.
    """
    folder = Path(folder)
    entry = folder / f"{subject}.npz"
    if (
        not subject
        or Path(subject).name != subject
        or subject in (".", "..")
        or entry.resolve().parent != folder.resolve()
    ):
        raise InputError(f"subject {subject!r} cannot name a cache entry: it would leave {folder}")
    return entry


def _entry_is_fresh(entry: Path, digest: str) -> bool:
    if not entry.is_file():
        return False
    try:
        with np.load(entry) as z:
            return str(z["source_hash"]) == digest and "grid_origin" in z.files
    except (OSError, KeyError, ValueError):
        return False  # unreadable entry: rebuild it


def preprocess_row(row: ManifestRow, cfg: Any, entry: Path) -> Path:
    """Load one scan as SUV (``load_pet`` with the row's weight/dose), preprocess it, write ``entry``."""
    from gliodeploy.io import load_pet
    from gliodeploy.preprocessing import preprocess

    digest = input_hash(row.image)
    if row.series_uid:  # another series of the same folder is another input
        digest = hashlib.sha256(f"{digest}|series_uid={row.series_uid}".encode()).hexdigest()
    if _entry_is_fresh(entry, digest):
        return entry
    try:
        pet = load_pet(row.image, series_uid=row.series_uid, **row.suv_kwargs)
        out = preprocess(pet.image, cfg)
    except InputError as exc:  # keep the class (SuvError stays SuvError), name the subject
        raise type(exc)(f"subject {row.subject} ({row.image}): {exc}") from exc
    array = np.ascontiguousarray(out.array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"subject {row.subject} ({row.image}): preprocessed volume contains NaN/inf")
    with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            array=array,
            mask=np.asarray(out.mask, dtype=np.uint8),
            source_hash=np.array(digest),
            grid_origin=np.asarray(out.grid.GetOrigin(), dtype=np.float64),
            grid_spacing=np.asarray(out.grid.GetSpacing(), dtype=np.float64),
        )
    return entry


def build_cache(
    rows: Sequence[ManifestRow],
    cfg: Any,
    cache_root: str | Path,
    *,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Make sure every row has a fresh cache entry; return ``{subject: entry path}``.

    Args:
        rows: manifest rows to preprocess.
        cfg: a ``gliodeploy.preprocessing.PreprocessConfig`` (its fingerprint names the folder).
        cache_root: root folder of the cache (one subfolder per configuration).
        workers: processes for preprocessing (0 = in this process).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    folder = cache_dir(cache_root, cfg)
    entries = {r.subject: cache_entry(folder, r.subject) for r in rows}  # before anything is created
    folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(rows), desc="preprocess", unit="scan", disable=not progress, leave=False)
    try:
        if workers and workers > 0 and len(rows) > 1:
            # spawn: safe beside torch/OpenMP threads in the parent
            with ProcessPoolExecutor(
                max_workers=min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")
            ) as ex:
                futures = [ex.submit(preprocess_row, r, cfg, entries[r.subject]) for r in rows]
                for fut in futures:
                    fut.result()
                    bar.update(1)
        else:
            for r in rows:
                preprocess_row(r, cfg, entries[r.subject])
                bar.update(1)
    finally:
        bar.close()
    return entries
