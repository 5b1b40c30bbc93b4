"""Find the scans under the paths given on the command line: NIfTI files and DICOM series folders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gliodeploy.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` files."""
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then ``DICM`` (extension is not reliable)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_series(path: Path) -> bool:
    """True for a folder that directly holds DICOM files (one series per folder)."""
    return path.is_dir() and any(p.is_file() and _is_dicom_file(p) for p in path.iterdir())


def discover_scans(paths: Iterable[str | Path]) -> list[Path]:
    """Expand ``paths`` into scans, in a stable order, without duplicates.

    A NIfTI file or a DICOM series folder is one scan; any other folder is searched recursively
    for NIfTI files and DICOM series folders (sorted by path). A path that does not exist, or a
    folder with no scan in it, raises :class:`InputError` (a typo must not give an empty result).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_file():
            found.append(path)  # taken as given: the reader reports a file it cannot read
            continue
        if is_dicom_series(path):
            found.append(path)
            continue
        inner = sorted(p for p in path.rglob("*") if is_nifti(p) or (p.is_dir() and is_dicom_series(p)))
        if not inner:
            raise InputError(f"{path}: no NIfTI file (*.nii, *.nii.gz) or DICOM series folder found")
        found.extend(inner)
    unique: dict[Path, Path] = {}  # resolved -> as given, so output shows the user's own paths
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())
