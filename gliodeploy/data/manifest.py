"""Read and validate a cohort manifest CSV before any expensive work starts.

Columns (see docs/ARCHITECTURE.md): ``subject, image, label, scanner, site, split`` plus optional
SUV inputs (``weight_kg``, ``injected_dose_bq``). Every problem found is reported at once, naming
the manifest, the column and the rows, so a user fixes the file in one go.

Optional reader lesion location, used by the TBR baseline instead of its automatic hotspot
(``gliodeploy.evaluation.baseline``); leave the cell empty for scans without one:

* ``lesion_mm``: a point on the lesion, ``x;y;z`` in physical millimetres, LPS patient coordinates
  (DICOM / ITK / SimpleITK convention: x grows to the patient's left, y to posterior, z to superior) of
  the row's image - the convention of the synthetic ``lesion_center_mm`` column. Viewers that show RAS
  (3D Slicer, FSLeyes, MRIcroGL) need x and y negated. The baseline takes the hottest voxel within
  10 mm of it (outside the striatum).
* ``lesion_voi``: a lesion VOI mask (NIfTI, any non-zero voxel is in), relative to the manifest's
  folder or absolute, in the same physical space as the image (any voxel grid: it is resampled onto
  the model grid with nearest neighbour). SUVmax / mean are read inside it. Wins over ``lesion_mm``.

Optional ``series_uid``: the DICOM SeriesInstanceUID to read when the row's image folder holds several
series (a study export); empty = the reader's automatic choice (PET, attenuation-corrected first).

``subject`` must be a safe file name (letters, digits, ``.``, ``_``, ``-``; see :data:`SUBJECT_PATTERN`):
it names the preprocessing cache entry and report rows, so ``../x`` or ``a/b`` are refused here.

Synthetic cohorts carry the true lesion centre ``lesion_center_mm`` (same ``x;y;z`` LPS mm format),
read into :attr:`ManifestRow.truth_lesion_mm` so the report can say how often the automatic hotspot
misses the lesion; it is ground truth, never used as a reader location, and a malformed value only
leaves that scan out of the miss rate.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gliodeploy.errors import ConfigError, InputError

REQUIRED_COLUMNS: tuple[str, ...] = ("subject", "image", "label", "scanner", "site", "split")
#: Optional numeric columns handed to ``gliodeploy.io.load_pet`` as keyword arguments.
SUV_COLUMNS: tuple[str, ...] = ("weight_kg", "injected_dose_bq")
SPLITS: tuple[str, ...] = ("train", "test")
#: ``ManifestRow.label`` of a row without a label (only with ``read_manifest(require_labels=False)``).
NO_LABEL = -1
#: Optional reader lesion location columns (see the module docstring).
READER_POINT_COLUMN = "lesion_mm"
READER_VOI_COLUMN = "lesion_voi"
#: Ground-truth lesion centre of synthetic cohorts (``x;y;z`` LPS mm); never used as a reader location.
TRUTH_LESION_COLUMN = "lesion_center_mm"
#: Optional DICOM SeriesInstanceUID to read when the row's image folder holds several series.
SERIES_UID_COLUMN = "series_uid"
#: A subject names files (``<cache>/<fingerprint>/<subject>.npz``, reports): letters, digits, ``.``,
#: ``_`` and ``-``, starting with a letter or digit (no path separator, no ``..``, no hidden file).
SUBJECT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SERIES_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` cannot name a file (``None`` when it can)."""
    if not subject:
        return "empty subject"
    if not SUBJECT_PATTERN.fullmatch(subject) or ".." in subject:
        return (
            f"subject {subject!r} is not a safe file name: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit; no '/', '..' or spaces)"
        )
    return None


@dataclass(frozen=True)
class ManifestRow:
    """One scan of the cohort. ``image`` (and ``lesion_voi``) are resolved to absolute paths.

    ``line`` is the row's line in the CSV (1 = header) for error messages. ``lesion_mm`` /
    ``lesion_voi`` are the optional reader lesion location (LPS mm point / VOI mask path);
    ``truth_lesion_mm`` is a synthetic cohort's true lesion centre (LPS mm).
    """

    subject: str
    image: Path
    label: int
    scanner: str
    site: str
    split: str
    suv_kwargs: dict[str, float] = field(default_factory=dict)
    line: int = 0
    lesion_mm: tuple[float, float, float] | None = None
    lesion_voi: Path | None = None
    truth_lesion_mm: tuple[float, float, float] | None = None
    series_uid: str | None = None

    def where(self, column: str | None = None) -> str:
        """``line N (subject S), column C`` for error messages."""
        text = f"line {self.line} (subject {self.subject})" if self.line else f"subject {self.subject}"
        return f"{text}, column {column}" if column else text

    @property
    def stratum(self) -> str:
        """Cross-validation stratum: label x scanner (the study's stratification)."""
        return f"{self.label}|{self.scanner}"


@dataclass(frozen=True)
class Manifest:
    """A validated cohort manifest."""

    path: Path
    rows: tuple[ManifestRow, ...]

    @property
    def train(self) -> list[ManifestRow]:
        """Rows used for cross-validation (``split == "train"``), in file order."""
        return [r for r in self.rows if r.split == "train"]

    @property
    def test(self) -> list[ManifestRow]:
        """Held-out / external rows (``split == "test"``)."""
        return [r for r in self.rows if r.split == "test"]

    def by_subject(self) -> dict[str, ManifestRow]:
        """Rows keyed by subject identifier."""
        return {r.subject: r for r in self.rows}


def parse_point_mm(text: str) -> tuple[float, float, float]:
    """``"x;y;z"`` (mm) -> three finite floats; ValueError with the reason otherwise."""
    parts = [p.strip() for p in text.split(";")]
    if len(parts) != 3:
        raise ValueError(f"{text!r} is not 'x;y;z' (three numbers in mm separated by ';')")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not 'x;y;z' (three numbers in mm separated by ';')") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{text!r} has a non-finite coordinate")
    return values  # type: ignore[return-value]


def _fmt(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def read_manifest(
    path: str | Path,
    *,
    n_folds: int | None = None,
    require_train: bool = True,
    check_files: bool = True,
    require_labels: bool = True,
) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: the CSV file; relative ``image`` paths are resolved against its folder.
        n_folds: when given, every class and every label x scanner stratum of the training rows
            must hold at least this many subjects (else stratified K-fold cannot put one in each fold).
        require_train: raise when no row has ``split == "train"``.
        check_files: raise when image files/folders or ``lesion_voi`` files are missing (all listed).
        require_labels: when False, the ``label`` column may be absent or empty (``NO_LABEL``): scans to
            predict, not to score.

    Raises:
        InputError: unreadable file, missing image files.
        ConfigError: missing columns, bad values, duplicate subjects, no train rows, strata too small.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            raw = [{(k or "").strip(): (v or "").strip() for k, v in rec.items()} for rec in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc

    missing_cols = [c for c in REQUIRED_COLUMNS if c not in columns and (require_labels or c != "label")]
    if missing_cols:
        raise ConfigError(
            f"manifest {path} lacks column(s) {', '.join(missing_cols)} "
            f"(found: {', '.join(columns) or 'none'})"
        )
    if not raw:
        raise ConfigError(f"manifest {path} has no rows")

    problems: list[str] = []
    rows: list[ManifestRow] = []
    for line, rec in enumerate(raw, start=2):  # line 1 is the header
        subject = rec["subject"]
        if (problem := subject_problem(subject)) is not None:
            problems.append(f"line {line}: {problem}")
        label_text = rec.get("label", "")
        if not require_labels and label_text == "":
            label_text = str(NO_LABEL)
        elif label_text not in ("0", "1", "0.0", "1.0"):
            problems.append(f"line {line} ({subject}): label {label_text!r} is not 0 (TRC) or 1 (recurrence)")
            continue
        split = rec["split"].lower()
        if split not in SPLITS:
            problems.append(f"line {line} ({subject}): split {rec['split']!r} is not 'train' or 'test'")
        if not rec["image"]:
            problems.append(f"line {line} ({subject}): empty image path")
        if not rec["scanner"]:
            problems.append(f"line {line} ({subject}): empty scanner")
        suv: dict[str, float] = {}
        for col in SUV_COLUMNS:
            text = rec.get(col, "")
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value <= 0:
                problems.append(f"line {line} ({subject}): {col} {text!r} is not a positive number")
            else:
                suv[col] = value
        image = Path(rec["image"])
        image = image if image.is_absolute() else (path.parent / image)
        point = truth = None
        if text := rec.get(READER_POINT_COLUMN, ""):
            try:
                point = parse_point_mm(text)
            except ValueError as exc:
                problems.append(f"line {line} ({subject}): column {READER_POINT_COLUMN}: {exc}")
        if text := rec.get(TRUTH_LESION_COLUMN, ""):
            try:
                truth = parse_point_mm(text)
            except ValueError:
                truth = None  # ground truth for a report figure only: never blocks training
        series_uid = rec.get(SERIES_UID_COLUMN, "") or None
        if series_uid is not None and not _SERIES_UID_PATTERN.fullmatch(series_uid):
            problems.append(
                f"line {line} ({subject}): column {SERIES_UID_COLUMN}: {series_uid!r} is not a DICOM UID"
            )
        voi_text = rec.get(READER_VOI_COLUMN, "")
        voi = None
        if voi_text:
            voi = Path(voi_text)
            voi = (voi if voi.is_absolute() else (path.parent / voi)).resolve()
        rows.append(
            ManifestRow(
                subject=subject,
                image=image.resolve(),
                label=int(float(label_text)),
                scanner=rec["scanner"],
                site=rec["site"],
                split=split,
                suv_kwargs=suv,
                line=line,
                lesion_mm=point,
                lesion_voi=voi,
                truth_lesion_mm=truth,
                series_uid=series_uid,
            )
        )
    dupes = sorted(s for s, n in Counter(r.subject for r in rows).items() if n > 1)
    if dupes:
        problems.append(f"duplicate subject(s): {_fmt(dupes)}")
    if problems:
        raise ConfigError(f"manifest {path}: " + "; ".join(problems))

    if check_files:
        missing = [str(r.image) for r in rows if not r.image.exists()]
        if missing:
            raise InputError(f"manifest {path}: {len(missing)} image file(s) not found: {_fmt(missing, 5)}")
        missing = [
            f"{r.where(READER_VOI_COLUMN)}: {r.lesion_voi}"
            for r in rows
            if r.lesion_voi is not None and not r.lesion_voi.is_file()
        ]
        if missing:
            raise InputError(
                f"manifest {path}: {len(missing)} lesion VOI file(s) not found: {_fmt(missing, 5)}"
            )

    manifest = Manifest(path=path.resolve(), rows=tuple(rows))
    train = manifest.train
    if require_train and not train:
        raise ConfigError(f"manifest {path} has no row with split 'train': nothing to cross-validate")
    if n_folds is not None and train:
        check_strata(train, n_folds, source=str(path))
    return manifest


def check_strata(rows: list[ManifestRow], n_folds: int, *, source: str = "manifest") -> None:
    """Raise ConfigError if a class or a label x scanner stratum has fewer subjects than folds."""
    if n_folds < 2:
        raise ConfigError(f"folds must be >= 2 (got {n_folds})")
    if len(rows) < n_folds:
        raise ConfigError(f"{source}: {len(rows)} training subjects cannot fill {n_folds} folds")
    classes = Counter(r.label for r in rows)
    for label in (0, 1):
        if classes.get(label, 0) < n_folds:
            raise ConfigError(
                f"{source}: class {label} has {classes.get(label, 0)} training subject(s), fewer than "
                f"{n_folds} folds; use at most {max(classes.get(label, 0), 0)} folds or add subjects"
            )
    strata = Counter(r.stratum for r in rows)
    small = {s: n for s, n in strata.items() if n < n_folds}
    if small:
        desc = ", ".join(
            f"label {s.split('|')[0]} x scanner {s.split('|', 1)[1]!r}: {n}" for s, n in sorted(small.items())
        )
        raise ConfigError(
            f"{source}: stratum smaller than {n_folds} folds ({desc}); use --folds/training.folds "
            f"<= {min(small.values())} or merge scanners"
        )
