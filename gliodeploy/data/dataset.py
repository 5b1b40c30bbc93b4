"""Torch Dataset over cached, preprocessed volumes (masked SUV on the model grid).

Items are ``{"image": [1, X, Y, Z] float32, "label": float32 scalar, "subject": str, "index": int}``;
the DataLoader stacks them into ``[B, 1, X, Y, Z]``. Intensity normalisation is done by the model.

Augmentation runs in ``__getitem__`` (so in DataLoader workers). Each sample is augmented under its
own seed ``(seed, epoch, index)``, with the global generators saved and restored around it, so a run
is reproducible whatever the number of workers and a resumed run replays exactly the same epochs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gliodeploy.data.augmentation import Augmenter
from gliodeploy.data.cache import load_cached


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that is a pure function of (run seed, epoch, sample index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class CachedVolumeDataset(Dataset):
    """Volumes from the preprocessing cache with their labels; optional augmentation."""

    def __init__(
        self,
        entries: Sequence[str | Path],
        labels: Sequence[int],
        subjects: Sequence[str],
        *,
        augmenter: Augmenter | None = None,
        seed: int = 0,
        preload: bool = True,
    ) -> None:
        if not (len(entries) == len(labels) == len(subjects)):
            raise ValueError("entries, labels and subjects must have the same length")
        self.entries = [Path(p) for p in entries]
        self.labels = [int(v) for v in labels]
        self.subjects = list(subjects)
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0
        # Small cohorts fit in memory (164 x 5.4 MB at full size); workers share it copy-on-write.
        self._arrays = [load_cached(p).array for p in self.entries] if preload else None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before iterating; workers see it)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def _array(self, i: int) -> np.ndarray:
        return self._arrays[i] if self._arrays is not None else load_cached(self.entries[i]).array

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.array(self._array(i), dtype=np.float32, copy=True))[None]
        if self.augmenter is not None:
            image = self._augment(image, sample_seed(self.seed, self.epoch, i))
        return {
            "image": image,
            "label": torch.tensor(float(self.labels[i])),
            "subject": self.subjects[i],
            "index": i,
        }

    def _augment(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
                return self.augmenter(image)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
