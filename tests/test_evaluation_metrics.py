"""Metrics, bootstrap CIs, Youden threshold, paired AUC test and calibration."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from gliodeploy.errors import InputError
from gliodeploy.evaluation import metrics as M


def _sample(n: int, seed: int, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.7).astype(int)
    y[:2] = [0, 1]
    logits = separation * (2 * y - 1) + rng.normal(size=n)
    return y, 1 / (1 + np.exp(-logits))


def test_point_metrics_equal_sklearn_on_fixed_inputs() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.4, 0.55, 0.3, 0.6, 0.1, 0.7, 0.45, 0.2])
    m = M.point_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(4 / 6)  # 0.9, 0.8, 0.55, 0.7 of six positives
    assert m["specificity"] == pytest.approx(3 / 4)  # 0.6 is the one false positive


def test_bootstrap_ci_contains_point_and_narrows_with_sample_size() -> None:
    widths = []
    for n in (40, 640):
        y, p = _sample(n, seed=1, separation=0.5)
        est = M.bootstrap_metrics(y, p, n_resamples=300, seed=0)
        for name in M.METRIC_NAMES:
            assert est[name].low <= est[name].value <= est[name].high, name
        widths.append(est["roc_auc"].high - est["roc_auc"].low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 16x the patients, ~4x narrower


def test_bootstrap_is_deterministic_and_stratified() -> None:
    y, p = _sample(30, seed=2)
    a = M.bootstrap_metrics(y, p, n_resamples=200, seed=5)
    b = M.bootstrap_metrics(y, p, n_resamples=200, seed=5)
    assert a == b
    idx = M.stratified_bootstrap_indices(y, 50, seed=0)
    assert (y[idx].sum(axis=1) == y.sum()).all()  # class counts kept in every resample


def test_youden_threshold_is_chosen_on_oof_only() -> None:
    y_oof = np.array([0, 0, 0, 1, 1, 1])
    p_oof = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    t = M.youden_threshold(y_oof, p_oof)
    assert t == pytest.approx(0.35)  # perfect split between 0.3 and 0.35
    # a test set whose own optimum differs does not move the threshold chosen on OOF
    y_test = np.array([0, 0, 1, 1])
    p_test = np.array([0.5, 0.6, 0.7, 0.8])
    assert M.youden_threshold(y_test, p_test) == pytest.approx(0.7)
    m = M.point_metrics(y_test, p_test, threshold=t)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.0


def test_paired_bootstrap_auc_detects_a_better_model() -> None:
    y, good = _sample(200, seed=3, separation=2.0)
    rng = np.random.default_rng(4)
    noise = rng.random(200)
    cmp_ = M.paired_bootstrap_auc(y, good, noise, n_resamples=300)
    assert cmp_.delta.value > 0.3 and cmp_.delta.low > 0 and cmp_.p_value < 0.01
    same = M.paired_bootstrap_auc(y, good, good, n_resamples=100)
    assert same.delta.value == 0 and same.p_value == 1.0


def test_calibration_ece_and_temperature() -> None:
    y, p = _sample(400, seed=6, separation=1.0)
    overconfident = M.apply_temperature(p, 0.3)  # sharpen: logits x 3.3
    t = M.fit_temperature(y, overconfident)
    assert t == pytest.approx(M.fit_temperature(y, p) / 0.3, rel=1e-2)  # undoes the sharpening
    fixed = M.apply_temperature(overconfident, t)
    assert M.expected_calibration_error(y, fixed) < M.expected_calibration_error(y, overconfident)
    assert skm.roc_auc_score(y, fixed) == pytest.approx(skm.roc_auc_score(y, overconfident))
    curve = M.reliability_curve(y, p, n_bins=10)
    assert curve["count"].sum() == 400 and len(curve["count"]) == len(curve["observed"])


def test_curve_bands_bracket_the_observed_curve() -> None:
    y, p = _sample(120, seed=7)
    for kind in ("roc", "pr"):
        band = M.bootstrap_curve_bands(y, p, kind=kind, n_resamples=100)
        assert band["x"].shape == band["y"].shape == band["low"].shape
        assert (band["low"] <= band["high"] + 1e-12).all()


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0"),
        ([0, 1], [0.1], "equal length"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "only one class"),
        ([0, 1], [0.1, float("nan")], "NaN"),
    ],
)
def test_bad_inputs_raise_input_error(labels: list, scores: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        M.point_metrics(np.array(labels), np.array(scores))


def test_vectorised_bootstrap_equals_sklearn_per_resample() -> None:
    y, p = _sample(50, seed=8)
    p = np.round(p, 1)  # ties, to check the mid-rank AUC
    idx = M.stratified_bootstrap_indices(y, 7, seed=3)
    per_resample = [M.point_metrics(y[r], p[r], 0.4) for r in idx]
    for name in M.METRIC_NAMES:
        values = np.array([m[name] for m in per_resample])
        est = M.bootstrap_metrics(y, p, 0.4, n_resamples=7, seed=3, alpha=0.0)  # alpha 0: min and max
        assert est[name].low == pytest.approx(values.min()) and est[name].high == pytest.approx(values.max())
