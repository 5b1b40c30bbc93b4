"""Synthetic static 18F-FDOPA PET cohorts: the default data of the demo and the tests.

``generate_cohort`` writes a BIDS-like cohort (NIfTI in Bq/mL + BIDS-PET sidecars, participants.tsv)
and a training ``manifest.csv`` with ground truth; ``generate_subject`` simulates one scan in memory.
"""

from __future__ import annotations

from gliodeploy.synth.cohort import MANIFEST_COLUMNS, generate_cohort, write_subject
from gliodeploy.synth.plan import PlannedSubject, plan_cohort
from gliodeploy.synth.scanners import SCANNERS, SITES, SIZES
from gliodeploy.synth.subject import SubjectTruth, SyntheticSubject, generate_subject
from gliodeploy.synth.summary import CohortSummary, summarize_cohort

__all__ = [
    "MANIFEST_COLUMNS",
    "SCANNERS",
    "SITES",
    "SIZES",
    "CohortSummary",
    "PlannedSubject",
    "SubjectTruth",
    "SyntheticSubject",
    "generate_cohort",
    "generate_subject",
    "plan_cohort",
    "summarize_cohort",
    "write_subject",
]
