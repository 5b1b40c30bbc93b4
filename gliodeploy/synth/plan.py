"""Who is who in a synthetic cohort: site, scanner, true and observed label, output format.

The plan is drawn from the cohort seed alone, stratified like the study: the external site gets
``test_fraction`` of the subjects; each site has its recurrence prevalence (72 % / 81 %); within each
site x label stratum the two scanners are split half/half, so the scanner says nothing about the
label. Sites and labels are shuffled over subject indices so file order and identifiers carry no
information either. Label noise flips an exact share of the labels at each site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gliodeploy.errors import ConfigError
from gliodeploy.synth.scanners import SITES, TEST_SITE, TRAIN_SITE

#: The study's share of external test patients (32 of 196).
STUDY_TEST_FRACTION = 32 / 196
#: Stream of the cohort-level generator; subject streams use spawn keys (index,) and never collide.
_PLAN_STREAM = 2**31 - 1


@dataclass(frozen=True)
class PlannedSubject:
    """One row of the plan. ``label`` is what the manifest records (after label noise)."""

    index: int
    subject: str
    site: str
    scanner: str
    split: str
    true_label: int
    label: int
    dicom: bool

    @property
    def label_flipped(self) -> bool:
        """Whether label noise changed this subject's recorded label."""
        return self.label != self.true_label


def subject_id(index: int, n: int) -> str:
    """``sub-001`` style identifier (at least three digits, more for cohorts over 999)."""
    return f"sub-{index + 1:0{max(3, len(str(n)))}d}"


def _check_fraction(name: str, value: float, *, high: float, inclusive: bool) -> None:
    ok = 0.0 <= value <= high if inclusive else 0.0 <= value < high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        bound = f"<= {high}" if inclusive else f"< {high}"
        raise ConfigError(f"{name} must be a number >= 0 and {bound}, got {value!r}")


def plan_cohort(
    n: int,
    *,
    seed: int = 0,
    test_fraction: float = STUDY_TEST_FRACTION,
    label_noise: float = 0.05,
    dicom_fraction: float = 0.0,
) -> list[PlannedSubject]:
    """Assign site, scanner, labels and output format to ``n`` subjects (deterministic in ``seed``).

    Raises:
        ConfigError: ``n`` too small for a training site with both classes, or a fraction out of range.
    """
    if not isinstance(n, int) or n < 4:
        raise ConfigError(f"n must be an integer >= 4 (a training site needs both classes), got {n!r}")
    _check_fraction("test_fraction", test_fraction, high=1.0, inclusive=False)
    _check_fraction("label_noise", label_noise, high=0.5, inclusive=False)
    _check_fraction("dicom_fraction", dicom_fraction, high=1.0, inclusive=True)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_PLAN_STREAM,)))
    n_test = int(round(n * test_fraction))
    if n - n_test < 4:
        raise ConfigError(
            f"test_fraction={test_fraction} leaves {n - n_test} training subjects of {n}; need >= 4"
        )

    order = rng.permutation(n)
    site_of = {int(i): (TEST_SITE if k < n_test else TRAIN_SITE) for k, i in enumerate(order)}
    true_label: dict[int, int] = {}
    scanner_of: dict[int, str] = {}
    observed: dict[int, int] = {}
    for site_name in (TRAIN_SITE, TEST_SITE):
        site = SITES[site_name]
        members = np.array(sorted(i for i, s in site_of.items() if s == site_name), dtype=int)
        if members.size == 0:
            continue
        n_rec = int(round(members.size * site.recurrence_fraction))
        if site_name == TRAIN_SITE:  # cross-validation needs both classes
            n_rec = min(max(n_rec, 2), members.size - 2)
        labels = np.zeros(members.size, dtype=int)
        labels[:n_rec] = 1
        labels = rng.permutation(labels)
        for label in (0, 1):
            stratum = rng.permutation(members[labels == label])
            first = int(rng.integers(2))  # which scanner gets the odd subject
            for k, i in enumerate(stratum):
                scanner_of[int(i)] = site.scanners[(k + first) % 2]
        flips = set(rng.choice(members, size=int(round(members.size * label_noise)), replace=False).tolist())
        for i, label in zip(members, labels, strict=True):
            true_label[int(i)] = int(label)
            observed[int(i)] = int(1 - label) if int(i) in flips else int(label)
    dicom = set(rng.choice(n, size=int(round(n * dicom_fraction)), replace=False).tolist())
    return [
        PlannedSubject(
            index=i,
            subject=subject_id(i, n),
            site=site_of[i],
            scanner=scanner_of[i],
            split="test" if site_of[i] == TEST_SITE else "train",
            true_label=true_label[i],
            label=observed[i],
            dicom=i in dicom,
        )
        for i in range(n)
    ]
