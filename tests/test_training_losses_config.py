"""Losses against hand-computed values; experiment configs (every file in training/ must load)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gliodeploy.errors import ConfigError
from gliodeploy.training.config import load_experiment
from gliodeploy.training.losses import BCELoss, SymmetricCrossEntropy, build_loss

TRAINING_DIR = Path(__file__).resolve().parents[1] / "training"


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_bce_matches_hand_values() -> None:
    z, y = torch.tensor([[0.5], [-1.0]]), torch.tensor([1.0, 0.0])
    expected = [-math.log(_sig(0.5)), -math.log(1 - _sig(-1.0))]
    got = BCELoss(reduction="none")(z, y)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    weighted = BCELoss(pos_weight=3.0, reduction="none")(z, y)
    assert weighted.tolist() == pytest.approx([3 * expected[0], expected[1]], rel=1e-6)
    assert float(BCELoss()(z, y)) == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_sce_matches_hand_values() -> None:
    # z=2, y=1: p=sigmoid(2); CE=-log p; RCE = -(p*log 1 + (1-p)*A) = 4(1-p)
    # z=2, y=0: CE=-log(1-p); RCE = -(p*A) = 4p
    p = _sig(2.0)
    alpha, beta = 0.1, 1.0
    expected = [alpha * -math.log(p) + beta * 4 * (1 - p), alpha * -math.log(1 - p) + beta * 4 * p]
    loss = SymmetricCrossEntropy(alpha, beta, -4.0, reduction="none")
    got = loss(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.0]))
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # the reverse term is bounded: a confidently wrong sample costs at most beta * 4 from RCE
    wrong = SymmetricCrossEntropy(0.0, 1.0, reduction="none")(torch.tensor([50.0]), torch.tensor([0.0]))
    assert float(wrong) == pytest.approx(4.0, rel=1e-6)
    pw = SymmetricCrossEntropy(alpha, beta, pos_weight=2.0, reduction="none")(
        torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.0])
    )
    assert pw.tolist() == pytest.approx([2 * expected[0], expected[1]], rel=1e-6)
    assert isinstance(build_loss("sce"), SymmetricCrossEntropy)


def test_sce_gradient_flows() -> None:
    z = torch.tensor([0.3, -0.2], requires_grad=True)
    SymmetricCrossEntropy()(z, torch.tensor([1.0, 0.0])).backward()
    assert z.grad is not None and z.grad[0] < 0 < z.grad[1]


@pytest.mark.parametrize("path", sorted(TRAINING_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_training_config_loads(path: Path) -> None:
    from gliodeploy.models import MODEL_NAMES

    cfg = load_experiment(path)
    assert cfg.name == path.stem
    assert cfg.model.name in MODEL_NAMES
    if path.stem != "demo":  # study rows keep the study's settings
        t = cfg.training
        assert (t.folds, t.epochs, t.batch_size, t.lr, t.weight_decay) == (10, 150, 10, 1e-4, 1e-3)
        assert cfg.preprocessing.shape == (128, 128, 82)
        assert t.loss == ("sce" if path.stem.endswith("_sce") else "bce")
        assert t.augmentation == (path.stem != "cnn3d")


def test_training_dir_has_every_study_row() -> None:
    names = {p.stem for p in TRAINING_DIR.glob("*.toml")}
    study = {"cnn3d", "cnn3d_aug", "vgg11", "resnet10", "acs_resnet18", "senet_sce", "squeezenet_sce"}
    assert study | {"demo"} <= names


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_config_defaults_are_the_study(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, '[data]\nmanifest = "c/manifest.csv"\n'))
    t = cfg.training
    assert cfg.name == "exp" and cfg.model.name == "cnn3d"
    assert (t.folds, t.epochs, t.batch_size, t.optimizer) == (10, 150, 10, "adam")
    assert (t.lr, t.weight_decay) == (1e-4, 1e-3)
    assert (t.scheduler_patience, t.scheduler_factor, t.select_metric) == (15, 0.5, "val_loss")
    assert cfg.manifest == tmp_path / "c" / "manifest.csv"


def test_preprocessing_preset_with_override(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, '[preprocessing]\npreset = "tiny"\nnormalization = "tbr"\n'))
    assert cfg.preprocessing.shape == (32, 32, 21) and cfg.preprocessing.normalization == "tbr"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[training]\nepochz = 3\n", r"unknown key\(s\) epochz"),
        ("colour = 1\n", r"unknown key\(s\) colour"),
        ("[model]\nname = 'cnn3d'\ndepth = 3\n", r"\[model\]: unknown key\(s\) depth"),
        ("[training]\noptimizer = 'rmsprop'\n", "optimizer must be one of adam, sgd"),
        ("[training]\nfolds = 1\n", "folds must be >= 2"),
        ("[training]\nepochs = 'many'\n", "epochs must be an integer"),
        ("[augmentation]\np_rotation = 2\n", "p_rotation must be a probability"),
        ("[preprocessing]\npreset = 'huge'\n", "unknown preprocessing preset 'huge'"),
        ("[preprocessing]\nvoxel = 2\n", "known keys"),
        ("[training\n", "invalid TOML"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, text))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
