"""Honest validation: OOF predictions chosen without the validation fold's labels (issue: honest numbers).

Permuted labels carry no signal, so an honest protocol must give an OOF AUC compatible with 0.5; the
study's protocol (best epoch on the validation fold) is selected on those very patients and is
labelled optimistic by the software itself.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_experiment import write_tiny_experiment

from gliodeploy.errors import ConfigError
from gliodeploy.evaluation import metrics as M
from gliodeploy.evaluation.evaluate import BootstrapSettings, evaluate_run, selection_bias
from gliodeploy.evaluation.rundata import load_run
from gliodeploy.training.config import load_experiment
from gliodeploy.training.loop import lr_factor, run_experiment

pytestmark = pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning")
EPOCHS = 4


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gliodeploy.synth import generate_cohort

    return Path(generate_cohort(tmp_path_factory.mktemp("cohort"), n=30, seed=1, size="tiny", progress=False))


def _permuted(manifest: Path, seed: int) -> Path:
    """The manifest with the training labels shuffled within each scanner (same label x scanner strata,
    same preprocessing cache)."""
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    for scanner in sorted({r["scanner"] for r in rows}):  # within scanner: strata sizes unchanged
        train = [r for r in rows if r["split"] == "train" and r["scanner"] == scanner]
        labels = [r["label"] for r in train]
        rng.shuffle(labels)
        for r, y in zip(train, labels, strict=True):
            r["label"] = y
    out = manifest.with_name(f"manifest_permuted_{seed}.csv")
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _train(tmp: Path, manifest: Path, name: str, **training) -> Path:
    cfg = write_tiny_experiment(
        tmp / f"{name}.toml",
        name=name,
        # No scheduler feedback: the training trajectory is the same in every validation mode, so the
        # modes differ only in which epoch's validation predictions become the OOF ones.
        training={"epochs": EPOCHS, "scheduler": "constant", "max_steps_per_epoch": 3, **training},
        data={"manifest": manifest.as_posix()},
    )
    run_experiment(load_experiment(cfg), tmp / name, device="cpu", progress=False)
    return tmp / name


def _oof_auc_ci(run: Path) -> tuple[float, float, float]:
    oof = load_run(run).oof
    auc = M.bootstrap_metrics(oof.labels, oof.scores, n_resamples=500, seed=0)["roc_auc"]
    return auc.value, auc.low, auc.high


@pytest.mark.timeout(600)
def test_permuted_labels_honest_oof_is_chance_and_study_mode_is_flagged(cohort: Path, tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        manifest = _permuted(cohort, seed)
        honest = _train(tmp_path, manifest, f"final_{seed}", seed=seed)
        study = _train(tmp_path, manifest, f"study_{seed}", seed=seed, validation="study")
        value, low, high = _oof_auc_ci(honest)
        assert low <= 0.5 <= high, (
            f"seed {seed}: honest OOF AUC {value:.2f} [{low:.2f}-{high:.2f}] excludes 0.5"
        )
        for k in range(2):
            log = [json.loads(line) for line in (honest / f"fold_{k}" / "log.jsonl").read_text().splitlines()]
            d_final = json.loads((honest / f"fold_{k}" / "done.json").read_text())
            d_study = json.loads((study / f"fold_{k}" / "done.json").read_text())
            assert d_final["selected_epoch"] == EPOCHS - 1 and d_final["validation"] == "final"
            # same trajectory: the study's choice is the lowest validation-fold loss over the epochs,
            # never worse than the final epoch's - selection on the patients it is scored on
            assert [r["val_loss"] for r in log] == [
                json.loads(line)["val_loss"]
                for line in (study / f"fold_{k}" / "log.jsonl").read_text().splitlines()
            ]
            assert d_study["selected_val_loss"] == min(r["val_loss"] for r in log) <= log[-1]["val_loss"]
        # the honest run measures the study's optimism on its own trajectories (from the logged
        # per-patient losses): exactly what the study-mode run reports
        bias = selection_bias(load_run(honest))
        assert bias["oof_auc_final_epoch"] == pytest.approx(_oof_auc_ci(honest)[0], abs=2e-3)
        assert bias["oof_auc_if_selected_on_validation_fold"] == pytest.approx(
            _oof_auc_ci(study)[0], abs=2e-3
        )
        # the software says which is which, in words
        boot = BootstrapSettings(n_resamples=200)
        for run, mode in ((honest, "final"), (study, "study")):
            data = load_run(run)
            result = evaluate_run(
                data.name, data.oof, None, boot, validation_mode=data.plans["validation"]["mode"]
            )
            flagged = any("optimistic" in n for n in result["diagnosis"])
            assert result["validation_mode"] == mode and result["optimistic"] == flagged == (mode == "study")


def test_inner_validation_split_is_carved_from_training_folds(cohort: Path, tmp_path: Path) -> None:
    run = _train(tmp_path, cohort, "inner", validation="inner", inner_val_fraction=0.3, scheduler="plateau")
    splits = json.loads((run / "splits.json").read_text())
    for k in range(2):
        inner = json.loads((run / f"fold_{k}" / "inner_split.json").read_text())
        assert set(inner["fit"]) | set(inner["inner_val"]) == set(splits[k]["train"])
        assert not set(inner["fit"]) & set(inner["inner_val"])
        assert not set(inner["inner_val"]) & set(splits[k]["val"])  # the validation fold stays unseen
        done = json.loads((run / f"fold_{k}" / "done.json").read_text())
        log = [json.loads(line) for line in (run / f"fold_{k}" / "log.jsonl").read_text().splitlines()]
        assert done["n_inner_val"] == len(inner["inner_val"]) > 0 and "inner_loss" in log[0]
        # early stopping chose the epoch of the best inner loss, not of the best validation loss
        assert done["selected_epoch"] == int(np.argmin([r["inner_loss"] for r in log]))
    assert json.loads((run / "plans.json").read_text())["validation"]["mode"] == "inner"


def test_learning_rate_schedules() -> None:
    assert [lr_factor(e, 10, 0, cosine=False) for e in range(3)] == [1.0, 1.0, 1.0]
    warm = [lr_factor(e, 10, 2, cosine=True) for e in range(10)]
    assert warm[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a >= b for a, b in zip(warm[2:], warm[3:], strict=False)) and 0 < warm[-1] < 0.05


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"validation": "best"}, "validation must be one of final, inner, study"),
        ({"scheduler": "poly"}, "scheduler must be one of"),
        ({"warmup_epochs": 1}, "warmup_epochs applies to scheduler"),
        ({"scheduler": "cosine", "warmup_epochs": 2}, "warmup_epochs must be >= 0 and smaller than epochs"),
        ({"inner_val_fraction": 0.9}, "inner_val_fraction must be in"),
    ],
)
def test_validation_options_are_checked(tmp_path: Path, training: dict, message: str) -> None:
    cfg = write_tiny_experiment(tmp_path / "bad.toml", training=training)
    with pytest.raises(ConfigError, match=message):
        load_experiment(cfg)
