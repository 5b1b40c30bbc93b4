"""Augmentation (batchgeneratorsv2) and the cached-volume Dataset, on small hand-made volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gliodeploy.data.augmentation import AugmentationConfig, Augmenter
from gliodeploy.data.dataset import CachedVolumeDataset
from gliodeploy.errors import ConfigError

SHAPE = (16, 16, 12)


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = (x**2 + y**2 + z**2) < 0.6
    return np.where(brain, 1.0 + rng.random(SHAPE), 0.0).astype(np.float32)


def _entries(tmp_path: Path, n: int = 4) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"s{i}.npz"
        a = _volume(i)
        np.savez(p, array=a, mask=(a > 0).astype(np.uint8), source_hash=np.array("h"))
        paths.append(p)
    return paths


def _strong() -> AugmentationConfig:
    return AugmentationConfig(p_rotation=1, p_scaling=1, p_noise=1, p_brightness=1, p_contrast=1, p_gamma=1)


def test_augmenter_keeps_shape_mask_and_sign() -> None:
    img = torch.from_numpy(_volume(0))[None]
    torch.manual_seed(0)
    np.random.seed(0)
    out = Augmenter(SHAPE, _strong())(img.clone())
    assert out.shape == (1, *SHAPE) and out.dtype == torch.float32
    assert not torch.equal(out, img)
    assert float(out.min()) >= 0  # SUV stays non-negative
    assert float(out[0, 0, 0, 0]) == 0  # background (outside the brain) stays zero despite noise/contrast


def test_mirror_only_is_an_exact_flip() -> None:
    cfg = AugmentationConfig(
        p_rotation=0,
        p_scaling=0,
        p_noise=0,
        p_brightness=0,
        p_contrast=0,
        p_gamma=0,
        p_gamma_inverted=0,
        mirror_axes=(0,),
    )
    img = torch.from_numpy(_volume(1))[None]
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = Augmenter(SHAPE, cfg)(img.clone())
        if torch.equal(out, img):
            seen.add("same")
        else:
            assert torch.equal(out, torch.flip(img, dims=[1]))
            seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_augmentation_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        AugmentationConfig.from_dict({"p_shear": 0.1})
    with pytest.raises(ConfigError, match="mirror_axes"):
        AugmentationConfig.from_dict({"mirror_axes": [3]})
    assert AugmentationConfig.from_dict({"scaling": [0.9, 1.1]}).scaling == (0.9, 1.1)


def test_dataset_items_and_batches(tmp_path: Path) -> None:
    ds = CachedVolumeDataset(_entries(tmp_path), [1, 0, 1, 0], ["a", "b", "c", "d"])
    item = ds[2]
    assert item["image"].shape == (1, *SHAPE) and item["subject"] == "c" and float(item["label"]) == 1.0
    assert np.array_equal(item["image"][0].numpy(), _volume(2))  # no augmentation: the cached SUV as is
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, *SHAPE)


def test_augmentation_is_seeded_per_sample_and_epoch(tmp_path: Path) -> None:
    entries = _entries(tmp_path)
    aug = Augmenter(SHAPE, _strong())
    ds = CachedVolumeDataset(entries, [1, 0, 1, 0], list("abcd"), augmenter=aug, seed=7)
    state = torch.get_rng_state()
    a0 = ds[1]["image"]
    assert torch.equal(state, torch.get_rng_state())  # the caller's generators are left untouched
    assert torch.equal(ds[1]["image"], a0)  # same (seed, epoch, index) -> same sample
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], a0)
    # independent of the order of access (hence of DataLoader workers)
    ds.set_epoch(0)
    order = [ds[i]["image"] for i in (3, 2, 1, 0)]
    assert torch.equal(order[2], a0)
