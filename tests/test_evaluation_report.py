"""The HTML/Markdown/JSON report: every section present, numbers equal metrics.json, images decode."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from gliodeploy.errors import ModelError
from gliodeploy.evaluation.evaluate import BootstrapSettings
from gliodeploy.evaluation.operating_point import choose_operating_point
from gliodeploy.evaluation.report import SECTIONS, ReportInputs, run_validation_mode, write_report
from gliodeploy.evaluation.rundata import Predictions, load_run

N_FOLDS, N_TRAIN, N_TEST, EPOCHS = 3, 36, 14, 5


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def make_fake_run(
    root: Path, name: str = "cnn3d_demo", seed: int = 0, suspect: str = "sub-003", validation: str = "final"
) -> Path:
    """A run directory with the files `gliodeploy train` writes (synthetic values, fixed seed)."""
    rng = np.random.default_rng(seed)
    run = root / name
    run.mkdir(parents=True)
    labels = (np.arange(N_TRAIN) % 3 != 0).astype(int)  # 2/3 recurrence, like the study
    probs = np.clip(0.5 + 0.25 * (2 * labels - 1) + rng.normal(0, 0.2, N_TRAIN), 0.01, 0.99)
    subjects = [f"sub-{i:03d}" for i in range(N_TRAIN)]
    folds = np.arange(N_TRAIN) % N_FOLDS
    scanners = ["biograph" if i % 2 else "vereos" for i in range(N_TRAIN)]
    _write_csv(
        run / "oof_predictions.csv",
        ["subject", "fold", "probability", "label", "scanner", "site"],
        [
            [s, f, repr(p), y, sc, "nancy"]
            for s, f, p, y, sc in zip(subjects, folds, probs, labels, scanners, strict=True)
        ],
    )
    (run / "plans.json").write_text(
        json.dumps(
            {
                "experiment": name,
                "folds": N_FOLDS,
                "model": {"name": "cnn3d"},
                "training": {},
                "validation": {"mode": validation},
            }
        )
    )
    for k in range(N_FOLDS):
        fold = run / f"fold_{k}"
        fold.mkdir()
        log = [{"epoch": e, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.69 - 0.03 * e} for e in range(EPOCHS)]
        (fold / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        val = [s for s, f in zip(subjects, folds, strict=True) if f == k]
        _write_csv(
            fold / "val_loss_per_patient.csv",
            ["subject", *[f"epoch_{e}" for e in range(EPOCHS)]],
            [[s, *[f"{(2.5 if s == suspect else 0.6) - 0.02 * e:.4f}" for e in range(EPOCHS)]] for s in val],
        )
    _write_csv(
        run / "suspect_labels.csv", ["subject", "fold", "mean_val_loss", "label"], [[suspect, 0, 2.45, 1]]
    )
    return run


def _test_predictions(seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = (np.arange(N_TEST) % 4 != 0).astype(int)
    fold_scores = np.clip(0.5 + 0.2 * (2 * labels[:, None] - 1) + rng.normal(0, 0.2, (N_TEST, N_FOLDS)), 0, 1)
    return Predictions(
        subjects=tuple(f"ext-{i:03d}" for i in range(N_TEST)),
        labels=labels,
        scores=fold_scores.mean(axis=1),
        sites=("paris",) * N_TEST,
        scanners=("vision",) * N_TEST,
        fold_scores=fold_scores,
    )


def _baseline(n: int, prefix: str, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(int)
    return Predictions(
        subjects=tuple(f"{prefix}-{i:03d}" for i in range(n)),
        labels=labels,
        scores=1.4 + 0.6 * labels + rng.normal(0, 0.3, n),
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.cells: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "td" and "data-metric" in a:
            self.cells.append(a)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, _Collector]:
    root = tmp_path_factory.mktemp("runs")
    runs = [
        load_run(make_fake_run(root, "cnn3d_demo", 0)),
        load_run(make_fake_run(root, "resnet10_demo", 1, validation="study")),
    ]
    test_baseline = _baseline(N_TEST, "ext", 3)
    inputs = ReportInputs(
        runs=runs,
        test={"cnn3d_demo": _test_predictions(0), "resnet10_demo": _test_predictions(1)},
        baseline_train=_baseline(N_TRAIN, "sub", 2),
        baseline_test=test_baseline,
        distribution=[
            ("train", "nancy", "biograph", 1),
            ("train", "nancy", "vereos", 0),
            ("test", "paris", "vision", 1),
        ],
        manifest="cohort/manifest.csv",
        operating_points={
            r.name: choose_operating_point(
                r.oof.labels, r.oof.scores, validation_mode=run_validation_mode(r.plans), n_resamples=200
            )
            for r in runs
        },
    )
    out = root / "evaluation"
    paths = write_report(inputs, out, BootstrapSettings(n_resamples=200), curve_resamples=50)
    parser = _Collector()
    parser.feed(paths["html"].read_text())
    return out, json.loads(paths["metrics"].read_text()), parser


def test_report_has_every_section_and_decodable_images(report: tuple[Path, dict, _Collector]) -> None:
    out, metrics, parser = report
    assert parser.sections == list(SECTIONS)
    assert len(parser.images) >= 8
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        img = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert (out / "report.md").read_text().count("| cnn3d_demo |") == 4  # 2 splits x 2 thresholds


def test_html_numbers_equal_metrics_json(report: tuple[Path, dict, _Collector]) -> None:
    _, metrics, parser = report
    expected = {
        (r["model"], r["split"], r["threshold_name"], m): v["value"]
        for r in metrics["table"]
        for m, v in r["metrics"].items()
    }
    shown = {
        (c["data-model"], c["data-split"], c["data-threshold"], c["data-metric"]): c for c in parser.cells
    }
    assert set(shown) == set(expected)
    for key, value in expected.items():
        assert float(shown[key]["data-value"]) == pytest.approx(value)
    # the ensemble's test AUC in the JSON is the AUC of the mean fold probability
    from sklearn.metrics import roc_auc_score

    test = _test_predictions(0)
    run = metrics["runs"][0]
    assert run["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(test.labels, test.scores)
    )
    assert len(run["test"]["folds"]["per_fold"]) == N_FOLDS
    assert set(metrics["baseline"]["test"]["thresholds"]) == {"1.6", "2", "youden"}
    assert "test_auc_vs_baseline" in run and 0 < run["test_auc_vs_baseline"]["p_value"] <= 1
    (pair,) = metrics["test_auc_pairwise"]
    assert (pair["a"], pair["b"], pair["n"]) == ("cnn3d_demo", "resnet10_demo", N_TEST)
    other = metrics["runs"][1]["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"]["value"]
    assert pair["delta"]["value"] == pytest.approx(pair["auc_a"] - pair["auc_b"])
    assert pair["auc_b"] == pytest.approx(other)


def test_suspects_and_youden_come_from_the_run(report: tuple[Path, dict, _Collector]) -> None:
    _, metrics, _ = report
    run = metrics["runs"][0]
    assert run["suspect_labels"] == ["sub-003"]
    # the operating point applied to the test set is the one chosen on OOF (Youden by default)
    op = run["operating_point"]
    assert op["method"] == "youden" and op["threshold"] == run["youden_threshold"]
    assert run["test"]["thresholds"]["operating_point"]["threshold"] == op["threshold"]
    assert run["validation"]["thresholds"]["operating_point"]["threshold"] == op["threshold"]
    agree = run["test"]["fold_agreement"]
    assert 0 <= agree["scans_all_folds_agree"] <= agree["decisions_equal_to_ensemble"] <= 1


def test_study_mode_is_labelled_optimistic(report: tuple[Path, dict, _Collector]) -> None:
    out, metrics, _ = report
    honest, study = metrics["runs"]
    assert (honest["validation_mode"], honest["optimistic"]) == ("final", False)
    assert (study["validation_mode"], study["optimistic"]) == ("study", True)
    assert any("optimistic" in n for n in study["diagnosis"])
    assert not any("optimistic" in n for n in honest["diagnosis"])
    page = (out / "report.html").read_text()
    assert "Model selected on these patients (optimistic):</b> resnet10_demo" in page
    assert "Model selected on these patients (optimistic):** resnet10_demo" in (out / "report.md").read_text()


def test_load_run_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(ModelError, match="oof_predictions.csv is missing"):
        load_run(tmp_path)
    (tmp_path / "oof_predictions.csv").write_text("subject,fold,probability\nsub-1,0,0.3\n")
    with pytest.raises(ModelError, match="missing column"):
        load_run(tmp_path)


def _preds(scores: np.ndarray, labels: np.ndarray) -> Predictions:
    return Predictions(tuple(f"s{i}" for i in range(len(labels))), labels, scores)


def test_built_in_prior_diagnosis_says_whether_training_added_anything() -> None:
    from gliodeploy.evaluation.evaluate import evaluate_run

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    weak = np.clip(0.5 + 0.1 * (labels - 0.5) + rng.normal(0, 0.2, 80), 0.01, 0.99)  # AUC ~0.6
    strong = np.clip(0.5 + 0.6 * (labels - 0.5) + rng.normal(0, 0.1, 80), 0.01, 0.99)  # AUC ~1
    boot = BootstrapSettings(n_resamples=300, seed=0)
    # trained = untrained: nothing added, said in words
    same = evaluate_run(
        "r", _preds(weak, labels), None, boot, prior=("its prior", _preds(weak, labels), None)
    )
    assert same["built_in_prior"]["validation"]["delta"]["value"] == 0.0
    assert same["built_in_prior"]["test"] is None
    assert any("Training added no measurable discrimination" in n for n in same["diagnosis"])
    # training clearly beyond the prior: the comparison is recorded, no warning
    better = evaluate_run(
        "r", _preds(strong, labels), None, boot, prior=("its prior", _preds(weak, labels), None)
    )
    assert better["built_in_prior"]["validation"]["delta"]["low"] > 0
    assert not any("Training added" in n for n in better["diagnosis"])
    # training clearly below the prior: said as overfitting
    worse = evaluate_run(
        "r", _preds(weak, labels), None, boot, prior=("its prior", _preds(strong, labels), None)
    )
    assert worse["built_in_prior"]["validation"]["delta"]["high"] < 0
    assert any("worse than its untrained design" in n for n in worse["diagnosis"])
