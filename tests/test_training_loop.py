"""End-to-end cross-validated training on a tiny synthetic cohort (2 folds x 2 epochs, 32x32x21 grid)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_experiment import write_tiny_experiment

from gliodeploy.data.manifest import read_manifest
from gliodeploy.errors import ConfigError
from gliodeploy.training.config import load_experiment
from gliodeploy.training.loop import run_experiment
from gliodeploy.training.rundir import RunDir

# A fraction of a per cent of the coarse brain mask may fall outside the grid on some synthetic
# scans (the 8 mm grid is 168 mm tall): expected, not news.
pytestmark = pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gliodeploy.synth import generate_cohort

    return Path(generate_cohort(tmp_path_factory.mktemp("cohort"), n=20, seed=0, size="tiny", progress=False))


@pytest.fixture(scope="module")
def config_path(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_tiny_experiment(
        tmp_path_factory.mktemp("cfg") / "tiny.toml",
        training={"augmentation": True, "seed": 3},
        data={"manifest": cohort.as_posix()},
    )
    return path


@pytest.fixture(scope="module")
def reference(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    out = tmp_path_factory.mktemp("runs") / "reference"
    return run_experiment(load_experiment(config_path), out, device="cpu", progress=False)


def _weights(run: RunDir) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(run.weights(k))) for k in range(run.n_folds)]


def _same_weights(a: RunDir, b: RunDir) -> bool:
    return all(
        wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        for wa, wb in zip(_weights(a), _weights(b), strict=True)
    )


def test_run_directory_layout_and_oof(reference: RunDir, cohort: Path, config_path: Path) -> None:
    train = read_manifest(cohort).train
    plans = reference.plans()
    assert plans["folds"] == 2 and plans["model"]["name"] == "cnn3d"
    assert plans["preprocessing"]["shape"] == [32, 32, 21] and "threshold" not in plans
    assert plans["validation"]["mode"] == "final"  # honest by default: no selection on the fold
    assert reference.experiment_toml.read_text() == config_path.read_text()  # the config used, verbatim
    # OOF: every training subject exactly once, with its own label/scanner/site
    oof = reference.oof_predictions()
    assert sorted(r["subject"] for r in oof) == sorted(r.subject for r in train)
    by_subject = {r.subject: r for r in train}
    for r in oof:
        assert 0 <= r["probability"] <= 1
        row = by_subject[r["subject"]]
        assert (r["label"], r["scanner"], r["site"]) == (row.label, row.scanner, row.site)
    for k in range(2):
        log = reference.fold_log(k)
        assert [r["epoch"] for r in log] == [0, 1]
        assert {"epoch", "lr", "train_loss", "val_loss", "val_auc", "val_acc", "time"} <= set(log[0])
        with open(reference.val_losses(k)) as fh:
            rows = list(csv.reader(fh))
        n_val = len(json.loads(reference.splits_json.read_text())[k]["val"])
        assert rows[0] == ["subject", "epoch_0", "epoch_1"] and len(rows) == 1 + n_val
        done = json.loads(reference.done(k).read_text())
        assert done["validation"] == "final" and done["selected_epoch"] == 1  # the final epoch
        ckpt = torch.load(reference.checkpoint_last(k), weights_only=True)  # plain state only
        assert ckpt["epoch"] == 1 and "optimizer" in ckpt and "scheduler" in ckpt
    assert reference.suspect_csv.read_text().startswith("subject,fold,mean_val_loss,label")


def test_splits_stratified_on_label_and_scanner(reference: RunDir, cohort: Path) -> None:
    strata = {r.subject: r.stratum for r in read_manifest(cohort).train}
    splits = json.loads(reference.splits_json.read_text())
    totals = Counter(strata.values())
    for sp in splits:
        counts = Counter(strata[s] for s in sp["val"])
        for stratum, total in totals.items():
            assert abs(counts[stratum] - total / 2) <= 0.5  # each stratum split evenly over 2 folds


def test_fold_models_load_in_eval_mode(reference: RunDir) -> None:
    models = reference.load_fold_models()
    assert len(models) == 2 and not any(m.training for m in models)
    x = torch.zeros(1, 1, 32, 32, 21)
    x[0, 0, 8:24, 8:24, 5:16] = 1.5
    with torch.no_grad():
        assert models[0](x).shape == (1, 1)


def test_training_is_deterministic(reference: RunDir, config_path: Path, tmp_path: Path) -> None:
    again = run_experiment(load_experiment(config_path), tmp_path / "again", device="cpu", progress=False)
    assert again.oof_csv.read_text() == reference.oof_csv.read_text()
    assert _same_weights(again, reference)


def test_resume_after_interruption_matches_uninterrupted(
    reference: RunDir, config_path: Path, tmp_path: Path
) -> None:
    cfg = load_experiment(config_path)
    out = tmp_path / "interrupted"

    def crash(fold: int, epoch: int, record: dict) -> None:
        if (fold, epoch) == (1, 0):
            raise KeyboardInterrupt  # as if the job was killed after fold 1's first epoch

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, out, device="cpu", progress=False, on_epoch_end=crash)
    run = RunDir(out)
    assert run.is_fold_done(0) and not run.is_fold_done(1) and not run.oof_csv.exists()
    with pytest.raises(ConfigError, match="use --resume"):
        run_experiment(cfg, out, device="cpu", progress=False)
    epochs_run: list[tuple[int, int]] = []
    run_experiment(
        cfg,
        out,
        resume=True,
        device="cpu",
        progress=False,
        on_epoch_end=lambda f, e, r: epochs_run.append((f, e)),
    )
    assert epochs_run == [(1, 1)]  # fold 0 skipped, fold 1 continued from epoch 1
    assert run.oof_csv.read_text() == reference.oof_csv.read_text()
    assert _same_weights(run, reference)
    # identical history apart from the wall time
    strip = [{k: v for k, v in r.items() if k != "time"} for r in run.fold_log(1)]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in reference.fold_log(1)]


def test_single_fold_jobs_then_collect(config_path: Path, reference: RunDir, tmp_path: Path) -> None:
    cfg = load_experiment(config_path)
    out = tmp_path / "array"
    run_experiment(cfg, out, fold=1, device="cpu", progress=False)
    run = RunDir(out)
    assert run.done_folds() == [1] and not run.oof_csv.exists()
    run_experiment(cfg, out, fold=0, device="cpu", progress=False)
    assert run.oof_csv.read_text() == reference.oof_csv.read_text()  # assembled by the last fold job
    with pytest.raises(ConfigError, match="--fold 2 is out of range"):
        run_experiment(cfg, out, fold=2, device="cpu", progress=False)


def test_cli_exit_codes(config_path: Path, reference: RunDir, tmp_path: Path, capsys) -> None:
    from gliodeploy.cli import app
    from gliodeploy.cli_utils import run_app

    def cli(*args: str) -> int:
        with pytest.raises(SystemExit) as info:
            run_app(app, ["train", *map(str, args)])
        return int(info.value.code or 0)

    assert cli(config_path, "--out", reference.path, "--quiet") == 2  # refuses to overwrite a finished run
    assert "finished run" in capsys.readouterr().err
    assert cli(config_path, "--out", reference.path, "--resume", "--quiet") == 0  # nothing to do, reports AUC
    assert "out-of-fold AUC" in capsys.readouterr().out
    assert cli(tmp_path / "missing.toml") == 2
    assert "experiment config not found" in capsys.readouterr().err
    assert cli(config_path, "--manifest", tmp_path / "none.csv", "--out", tmp_path / "x", "--quiet") == 2
    assert "manifest not found" in capsys.readouterr().err


def test_cache_reuses_entries_and_rebuilds_changed_scans(cohort: Path, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.preprocessing import PreprocessConfig

    row = read_manifest(cohort).train[0]
    image = tmp_path / row.image.name  # with its BIDS sidecar (units, dose)
    shutil.copy(row.image, image)
    sidecar = row.image.with_name(row.image.name.replace(".nii.gz", ".json"))
    shutil.copy(sidecar, tmp_path / sidecar.name)
    row = dataclasses.replace(row, image=image)
    cfg = PreprocessConfig.tiny()
    entry = build_cache([row], cfg, tmp_path / "cache", progress=False)[row.subject]
    assert entry.parent.name == cfg.fingerprint()
    first = load_cached(entry)
    assert first.array.shape == (32, 32, 21) and first.array.dtype == "float32" and first.array.max() > 0
    stamp = entry.stat().st_mtime_ns
    build_cache([row], cfg, tmp_path / "cache", progress=False)
    assert entry.stat().st_mtime_ns == stamp  # fresh entry reused, not recomputed
    shutil.copy(read_manifest(cohort).train[1].image, image)  # the scan on disk changed
    build_cache([row], cfg, tmp_path / "cache", progress=False)
    assert load_cached(entry).source_hash != first.source_hash


def _tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Read tensorboardX event files (TFRecord: u64 length, u32 crc, payload, u32 crc) into tag -> points."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_optional_tensorboard_logs_match_the_json_log(
    cohort: Path, reference: RunDir, tmp_path: Path
) -> None:
    path = write_tiny_experiment(
        tmp_path / "tb.toml",
        "tb",
        training={"tensorboard": True},
        data={"manifest": cohort.as_posix()},
    )
    run = run_experiment(load_experiment(path), tmp_path / "run", fold=0, device="cpu", progress=False)
    scalars = _tensorboard_scalars(run.fold_dir(0) / "tensorboard")
    log = [json.loads(line) for line in run.log(0).read_text().splitlines()]
    assert [step for step, _ in scalars["val_loss"]] == [r["epoch"] for r in log]
    assert [v for _, v in scalars["val_loss"]] == pytest.approx([r["val_loss"] for r in log], rel=1e-6)
    assert not (reference.fold_dir(0) / "tensorboard").exists()  # off by default
