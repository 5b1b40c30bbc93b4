"""Cohort data for training: manifest, preprocessing cache, cross-validation splits, torch Dataset.

Only :mod:`gliodeploy.data.manifest`, :mod:`gliodeploy.data.cache` and :mod:`gliodeploy.data.splits`
are imported here; the torch-based dataset and augmentation are imported from their modules.
"""

from __future__ import annotations

from gliodeploy.data.manifest import Manifest, ManifestRow, read_manifest

__all__ = ["Manifest", "ManifestRow", "read_manifest"]
