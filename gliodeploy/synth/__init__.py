"""Synthetic static 18F-FDOPA PET cohorts: the default data of the demo and the tests.

``generate_cohort`` writes a BIDS-like cohort (NIfTI in Bq/mL + BIDS-PET sidecars, participants.tsv)
and a training ``manifest.csv`` with ground truth; ``generate_subject`` simulates one scan in memory.
The lesion's class-conditional distributions live in ``gliodeploy.synth.lesion`` (``LesionModel``);
docs/SYNTHETIC_COHORT.md describes them and the cohort's difficulty.
Names are imported lazily so that ``gliodeploy --help`` (which imports the ``synth`` command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "MANIFEST_COLUMNS": "gliodeploy.synth.cohort",
    "generate_cohort": "gliodeploy.synth.cohort",
    "write_subject": "gliodeploy.synth.cohort",
    "DEFAULT_LESION_MODEL": "gliodeploy.synth.lesion",
    "SHAPE_FEATURES": "gliodeploy.synth.lesion",
    "LesionModel": "gliodeploy.synth.lesion",
    "PlannedSubject": "gliodeploy.synth.plan",
    "plan_cohort": "gliodeploy.synth.plan",
    "SCANNERS": "gliodeploy.synth.scanners",
    "SITES": "gliodeploy.synth.scanners",
    "SIZES": "gliodeploy.synth.scanners",
    "SubjectTruth": "gliodeploy.synth.subject",
    "SyntheticSubject": "gliodeploy.synth.subject",
    "generate_subject": "gliodeploy.synth.subject",
    "CohortSummary": "gliodeploy.synth.summary",
    "summarize_cohort": "gliodeploy.synth.summary",
}
__all__ = [
    "DEFAULT_LESION_MODEL",
    "MANIFEST_COLUMNS",
    "SCANNERS",
    "SHAPE_FEATURES",
    "SITES",
    "SIZES",
    "CohortSummary",
    "LesionModel",
    "PlannedSubject",
    "SubjectTruth",
    "SyntheticSubject",
    "generate_cohort",
    "generate_subject",
    "plan_cohort",
    "summarize_cohort",
    "write_subject",
]

if TYPE_CHECKING:
    from gliodeploy.synth.cohort import MANIFEST_COLUMNS, generate_cohort, write_subject
    from gliodeploy.synth.lesion import DEFAULT_LESION_MODEL, SHAPE_FEATURES, LesionModel
    from gliodeploy.synth.plan import PlannedSubject, plan_cohort
    from gliodeploy.synth.scanners import SCANNERS, SITES, SIZES
    from gliodeploy.synth.subject import SubjectTruth, SyntheticSubject, generate_subject
    from gliodeploy.synth.summary import CohortSummary, summarize_cohort


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gliodeploy.synth' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
