"""Atomic file writes: a reader never sees a half-written checkpoint, report or model file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Markers in the hidden names of atomic_path's temporaries: ``.NAME.tmp-*`` (being written) and
#: ``.NAME.old-*`` (a replaced folder on its way out); remove_stale_temporaries looks for the same.
_TMP, _OLD = ".tmp-", ".old-"


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike[str], *, is_dir: bool = False, replace_dir: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    On an exception the temporary file (or folder, with ``is_dir=True``) is removed and
    ``target`` is left exactly as it was. An existing folder is refused unless ``replace_dir``: then
    it is moved aside only once the new one is complete, and removed after the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}{_TMP}"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix="".join(target.suffixes), dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600; give the final file the usual permissions (0666 minus the umask) so that
        # a report, checkpoint or model file is readable as any other file the user writes.
        os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if is_dir and target.exists():
            if not replace_dir:
                raise FileExistsError(f"{target} already exists; refusing to replace a folder")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_OLD}", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the hidden temporaries that ``atomic_path`` leaves in ``folder`` when killed (SIGKILL).

    Only call this when no other process writes in ``folder`` (e.g. a fold being resumed by its only
    owner). Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if p.name.startswith(".") and (_TMP in p.name or _OLD in p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(target: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``target`` atomically (text is UTF-8)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(target)
