"""`gliodeploy evaluate` end to end on a synthetic cohort, and its error messages / exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app

torch = pytest.importorskip("torch")
N_FOLDS = 2
SPEC = {"name": "cnn3d", "width": 0.0625, "kwargs": {"fc_width": 16}}


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run_app(app, args)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic cohort with a test split and a finished run (untrained tiny fold models, seeded OOF)."""
    from safetensors.torch import save_file

    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("evaluate")
    manifest = generate_cohort(root / "cohort", n=10, seed=3, size="small", test_fraction=0.4, progress=False)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["split"] == "train"]
    assert {r["label"] for r in train} == {"0", "1"}
    assert {r["label"] for r in rows if r["split"] == "test"} == {"0", "1"}

    cfg = PreprocessConfig.tiny(max_brain_cut=0.2)
    run = root / "run"
    run.mkdir()
    plans = {"experiment": "tiny_cnn", "preprocessing": cfg.to_dict(), "model": SPEC, "folds": N_FOLDS}
    (run / "plans.json").write_text(json.dumps({**plans, "manifest": str(manifest)}))
    for k in range(N_FOLDS):
        torch.manual_seed(k)
        model = build_model("cnn3d", preprocessing=cfg, width=SPEC["width"], **SPEC["kwargs"])
        (run / f"fold_{k}").mkdir()
        save_file(
            {n: t.contiguous() for n, t in model.state_dict().items()},
            str(run / f"fold_{k}/model_best.safetensors"),
        )
        (run / f"fold_{k}/done.json").write_text("{}")
        log = [{"epoch": e, "train_loss": 0.7 - 0.01 * e, "val_loss": 0.69 - 0.005 * e} for e in range(3)]
        (run / f"fold_{k}/log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    rng = np.random.default_rng(0)
    with open(run / "oof_predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject", "fold", "probability", "label", "scanner", "site"])
        for i, r in enumerate(train):
            p = float(np.clip(0.35 + 0.3 * int(r["label"]) + rng.normal(0, 0.15), 0.01, 0.99))
            w.writerow([r["subject"], i % N_FOLDS, p, r["label"], r["scanner"], r["site"]])
    return run, manifest


def test_evaluate_writes_report_with_ensemble_and_baseline(cohort_run: tuple[Path, Path], capsys) -> None:
    from sklearn.metrics import roc_auc_score

    from gliodeploy.data.cache import build_cache, load_cached
    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.training.rundir import RunDir

    run, manifest = cohort_run
    out = run / "eval"
    assert _cli(["evaluate", str(run), "--bootstrap", "200", "--out", str(out)]) == 0
    assert "html:" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    assert html.count("<section id=") == 11 and "data:image/png;base64," in html

    # the test AUC is the AUC of the mean fold probability on the cached test volumes
    test_rows = read_manifest(manifest, require_train=False).test
    entries = build_cache(test_rows, RunDir(run).preprocessing(), manifest.parent / "cache", progress=False)
    models = RunDir(run).load_fold_models()
    with torch.inference_mode():
        probs = [
            np.mean(
                [
                    torch.sigmoid(
                        m(torch.from_numpy(load_cached(entries[r.subject]).array)[None, None])
                    ).item()
                    for m in models
                ]
            )
            for r in test_rows
        ]
    labels = [r.label for r in test_rows]
    entry = metrics["runs"][0]
    assert entry["test"]["n"] == len(test_rows)
    assert entry["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(labels, probs)
    )
    assert len(entry["test"]["folds"]["per_fold"]) == N_FOLDS
    # the baseline was computed on every scan, evaluated on train (Youden) and test
    assert len(metrics["baseline_parameters"]) == len(read_manifest(manifest, require_train=False).rows)
    assert metrics["baseline"]["test"]["n"] == len(test_rows)
    assert {r["model"] for r in metrics["table"]} == {"tiny_cnn", "tbr_max baseline"}


def test_missing_run_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert _cli(["evaluate", str(tmp_path / "no_such_run")]) == 4
    assert "does not exist" in capsys.readouterr().err


def test_manifest_without_test_split_is_a_clear_error(
    cohort_run: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    run, manifest = cohort_run
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    train_only = manifest.parent / "train_only.csv"
    with open(train_only, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert _cli(["evaluate", str(run), "--manifest", str(train_only), "--out", str(tmp_path)]) == 2
    assert "no rows with split == 'test'" in capsys.readouterr().err
