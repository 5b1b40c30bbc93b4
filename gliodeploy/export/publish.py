"""Atomic publishing: one export appears in the model repository whole (all models and configs) or not at all.

An export never writes into the repository a server may be reading. Holding an exclusive lock on the
repository's parent folder, :class:`RepositoryUpdate`:

1. checks the current repository holds only what export writes and verifies every version folder it
   keeps (a tampered version is never carried forward, nor blessed by the new manifest);
2. builds the complete next state in a staging folder beside it (``.<name>.staging-<pid>-*``, same
   file system): kept versions hard-linked (version files are never modified in place), then the
   caller writes the new version of every model and every configuration, then the repository
   manifest ``SHA256SUMS`` is written last;
3. flushes the staging tree to disk and swaps it with the repository in one
   ``renameat2(RENAME_EXCHANGE)``; where the file system cannot exchange, with two renames, the old
   state parked as ``.<name>.previous-<pid>-*`` in between (the next export renames it back if a
   crash fell between the two renames, and :func:`verify_repository` says so);
4. removes the old state.

A crash before step 3 leaves the repository exactly as it was, after it exactly the new state. The
next export removes staging/previous folders of killed exports; it holds the lock, so none is in use.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from gliodeploy.errors import ModelError
from gliodeploy.export.integrity import (
    CHECKSUMS,
    LEGACY_STAGING_PREFIX,
    check_layout,
    format_sums,
    previous_prefix,
    sha256,
    staging_prefix,
    tree_files,
    verify_version,
)
from gliodeploy.export.repository import MODELS, versions
from gliodeploy.utils.atomic import atomic_write

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class RepositoryUpdate:
    """Context manager that builds the next state of a repository and publishes it atomically.

    >>> with RepositoryUpdate("model_repository") as update:   # doctest: +SKIP
    ...     (update.staging / "gliodeploy_ensemble" / str(update.version)).mkdir(parents=True)
    ...     ...  # every new version folder and every configuration, written under update.staging
    ...     update.commit()

    Leaving the block without :meth:`commit` (an exception) removes the staging folder: the
    repository is untouched.
    """

    def __init__(self, repo: str | os.PathLike[str]) -> None:
        # A symlinked repository is updated where it points: the link itself stays.
        self.target = Path(os.path.realpath(repo))
        self.staging = Path()
        self.version = 0
        self.committed = False
        self._lock_fd: int | None = None
        self._known: dict[str, str] = {}  # kept files (staging-relative) -> verified digest

    def __enter__(self) -> RepositoryUpdate:
        parent = self.target.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(parent)
        try:
            recover_interrupted_swap(self.target)
            remove_stale_staging(self.target)
            kept = kept_versions(self.target)
            self.version = max((v for model in kept.values() for v in model), default=0) + 1
            try:
                self.staging = Path(tempfile.mkdtemp(prefix=staging_prefix(self.target), dir=parent))
            except OSError as exc:
                raise ModelError(
                    f"cannot create a staging folder beside {self.target} ({exc}): an export builds the "
                    f"next repository state in {parent}, which must be writable"
                ) from None
            os.chmod(self.staging, 0o755)  # mkdtemp makes 0700; Triton containers run as another user
            self._known = link_versions(self.target, self.staging, kept)
        except BaseException:
            self._cleanup()
            raise
        return self

    def commit(self) -> None:
        """Write the manifest, flush, swap the staging state in, remove the old state."""
        write_manifest(self.staging, self._known)
        fsync_tree(self.staging)
        old = swap_into_place(self.staging, self.target)
        self.committed = True
        if old is not None:
            remove_old_state(old)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if not self.committed and self.staging != Path() and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _lock(parent: Path) -> int:
    """Exclusive, non-blocking flock on ``parent``: one export at a time next to a repository."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the staging/swap scheme still holds
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ModelError(
            f"another gliodeploy export is writing a repository in {parent}: wait until it finishes"
        ) from None
    return fd


def recover_interrupted_swap(target: Path) -> Path | None:
    """If a crash fell between the two renames of the fallback swap, put the old state back."""
    if target.exists() or target.is_symlink():
        return None
    parked = sorted(target.parent.glob(previous_prefix(target) + "*"))
    if not parked:
        return None
    if len(parked) > 1:
        raise ModelError(
            f"{target} is missing and several earlier states lie beside it ({', '.join(map(str, parked))}): "
            f"rename the one to keep to {target}"
        )
    os.rename(parked[0], target)
    return parked[0]


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove staging and parked folders of killed exports of ``target`` (called under the lock)."""
    removed = []
    for prefix in (staging_prefix(target), previous_prefix(target)):
        for folder in sorted(target.parent.glob(prefix + "*")):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def kept_versions(target: Path) -> dict[str, dict[int, dict[str, str]]]:
    """Version folders of the current repository, each verified: model -> version -> digests.

    Refuses (naming it) anything export does not write, and any version folder that fails its own
    ``SHA256SUMS``: the next state would carry it. Staging folders of killed exports and ``__pycache__``
    are left behind (the old state is deleted after the swap).
    """
    if not target.exists():
        return {}
    if not target.is_dir():
        raise ModelError(f"{target} exists and is not a folder: choose another --out")
    try:
        dropped = check_layout(target, for_export=True)
    except ModelError as exc:  # never delete what export did not write: say so and stop
        raise ModelError(f"cannot export into {target}: {exc}") from None
    for path in dropped:
        pid = path.name[len(LEGACY_STAGING_PREFIX) :].split("-")[0]
        if path.parent == target and pid.isdigit() and _process_alive(int(pid)):
            raise ModelError(f"{path}: an export (process {pid}) is still writing {target}: wait for it")
    kept: dict[str, dict[int, dict[str, str]]] = {}
    for model in MODELS:
        kept[model] = {}
        for v in versions(target / model):
            folder = target / model / str(v)
            try:
                kept[model][v] = verify_version(folder, exclude=("__pycache__",))
            except ModelError as exc:
                raise ModelError(
                    f"{exc}; an export keeps every earlier version and will not carry a modified one: "
                    f"restore {folder} from a backup or delete it"
                ) from None
    return kept


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def link_versions(target: Path, staging: Path, kept: dict[str, dict[int, dict[str, str]]]) -> dict[str, str]:
    """Hard-link (copy where links are impossible) the kept version files into ``staging``.

    Returns staging-relative path -> verified digest, so the manifest need not read them again.
    """
    known: dict[str, str] = {}
    for model, by_version in kept.items():
        for v, digests in by_version.items():
            rel_dir = f"{model}/{v}"
            (staging / rel_dir).mkdir(parents=True, mode=0o755)
            for name, digest in digests.items():
                src, dst = target / rel_dir / name, staging / rel_dir / name
                try:
                    os.link(src, dst)
                except OSError:  # EXDEV, EPERM (some file systems), EMLINK
                    shutil.copy2(src, dst)
                known[f"{rel_dir}/{name}"] = digest
    return known


def write_manifest(staging: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """Write ``staging/SHA256SUMS`` over every file of the staged repository (last file written)."""
    known = known or {}
    sums = {
        name: known.get(name) or sha256(staging / name) for name in tree_files(staging) if name != CHECKSUMS
    }
    atomic_write(staging / CHECKSUMS, format_sums(sums))
    os.chmod(staging / CHECKSUMS, 0o644)
    return sums


def fsync_tree(root: Path) -> None:
    """Flush every file and folder of ``root`` to disk, so the swap never publishes unwritten data."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the data files are flushed
        pass
    finally:
        os.close(fd)


def swap_into_place(staging: Path, target: Path) -> Path | None:
    """Make ``staging`` the repository ``target`` atomically; returns where the old state now is."""
    try:
        if not target.exists():
            os.rename(staging, target)
            return None
        if exchange(staging, target):
            return staging
        parked = target.parent / f"{previous_prefix(target)}{os.getpid()}-{os.urandom(4).hex()}"
        os.rename(target, parked)
        move_into_place(staging, target)
    except OSError as exc:
        raise ModelError(f"cannot publish the new state of {target}: {exc}") from None
    finally:
        _fsync_dir(target.parent)
    return parked


def move_into_place(staging: Path, target: Path) -> None:
    """Second rename of the fallback swap (``target`` is absent until it returns)."""
    os.rename(staging, target)


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two folders (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28 or another libc
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_old_state(old: Path) -> None:
    """Delete the replaced state (the new repository shares its kept files through hard links)."""
    shutil.rmtree(old, ignore_errors=True)
