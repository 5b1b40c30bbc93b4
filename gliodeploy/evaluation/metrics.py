"""Classification metrics with percentile-bootstrap 95 % confidence intervals.

Labels follow the project convention (1 = recurrence, the positive class; 0 = TRC). Scores are
probabilities of recurrence (or any monotone score such as TBR, for the threshold-free metrics).

Bootstrap design (documented because it changes the numbers): resampling is **stratified** -
positives and negatives are resampled with replacement separately, keeping the observed class
counts. Every resample therefore holds both classes, ROC AUC is always defined, and no resample is
silently dropped (with 32 test patients and 6 TRC, plain resampling would produce one-class draws
and a biased interval). The interval is the percentile interval of the resampled statistics; the
point estimate is the statistic on the observed data, never the bootstrap mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm

from gliodeploy.errors import InputError

#: Metrics reported for every model, in table order.
METRIC_NAMES: tuple[str, ...] = (
    "roc_auc",
    "average_precision",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
)
#: Metrics that do not depend on the decision threshold.
THRESHOLD_FREE: frozenset[str] = frozenset({"roc_auc", "average_precision"})
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile-bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return asdict(self)

    def format(self, digits: int = 3) -> str:
        """``0.812 [0.701-0.905]``."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"

    def format_signed(self, digits: int = 3) -> str:
        """``+0.012 [-0.020, +0.041]``: a difference, whose interval may cross zero."""
        return f"{self.value:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def check_binary(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *, what: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and scores (finite) to numpy arrays.

    Raises :class:`InputError` naming the problem (length mismatch, non-binary labels, NaN scores,
    a single class present).
    """
    where = f" ({what})" if what else ""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise InputError(f"labels and scores must be 1-D of equal length{where}: got {y.shape} and {s.shape}")
    if y.size == 0:
        raise InputError(f"no predictions to evaluate{where}")
    if not np.isin(y, (0, 1)).all():
        raise InputError(f"labels must be 0 (TRC) or 1 (recurrence){where}: found {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise InputError(f"scores contain NaN or infinite values{where}")
    y = y.astype(np.int64)
    if y.min() == y.max():
        raise InputError(f"only one class present (label {int(y[0])}){where}: metrics need both classes")
    return y, s


def point_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float]:
    """All :data:`METRIC_NAMES` on one sample; a score >= ``threshold`` predicts recurrence."""
    y, s = check_binary(labels, scores)
    return _metrics(y, s, threshold)


def _metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (s >= threshold).astype(np.int64)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(skm.roc_auc_score(y, s)),
        "average_precision": float(skm.average_precision_score(y, s)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "sensitivity": float(skm.recall_score(y, pred, pos_label=1, zero_division=0.0)),
        "specificity": float(tn / (tn + fp)) if (tn + fp) else float("nan"),
    }


def stratified_bootstrap_indices(labels: np.ndarray, n_resamples: int, seed: int = 0) -> np.ndarray:
    """``[n_resamples, n]`` row indices; each row resamples positives and negatives separately."""
    if n_resamples < 1:
        raise InputError(f"bootstrap resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    return np.concatenate(
        [rng.choice(pos, size=(n_resamples, pos.size)), rng.choice(neg, size=(n_resamples, neg.size))], axis=1
    )


def _percentile(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Every metric of :data:`METRIC_NAMES` with a (1 - alpha) stratified percentile-bootstrap CI.

    Point estimates come from scikit-learn; the resampled statistics are computed for all
    resamples at once (confusion counts, Mann-Whitney AUC with mid-ranks for ties, step-wise
    average precision), which equals scikit-learn's values (tested) and is ~50x faster.
    """
    from scipy.stats import rankdata

    y, s = check_binary(labels, scores)
    point = _metrics(y, s, threshold)
    idx = stratified_bootstrap_indices(y, n_resamples, seed)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    yb, sb = y[idx].astype(bool), s[idx]
    pred = sb >= threshold
    tp = (pred & yb).sum(axis=1)
    tn = (~pred & ~yb).sum(axis=1)
    sens, spec = tp / n_pos, tn / n_neg
    ranks = rankdata(sb, axis=1)  # average ranks for ties, as in the Mann-Whitney U statistic
    auc = (np.where(yb, ranks, 0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    boot = {
        "roc_auc": auc,
        "average_precision": _average_precision_rows(sb, n_pos),
        "accuracy": (tp + tn) / y.size,
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
    }
    return {name: Estimate(point[name], *_percentile(boot[name], alpha)) for name in METRIC_NAMES}


def _average_precision_rows(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """Average precision of every row of ``scores`` whose first ``n_pos`` columns are the positives.

    Same definition as scikit-learn's ``average_precision_score`` (step-wise, ties grouped): the
    mean over positives of the precision at their own score, P(s_i) = #pos(s >= s_i) / #all(s >= s_i).
    """
    from scipy.stats import rankdata

    n = scores.shape[1]
    all_ge = n - (rankdata(scores, method="min", axis=1)[:, :n_pos] - 1)
    pos_ge = n_pos - (rankdata(scores[:, :n_pos], method="min", axis=1) - 1)
    return (pos_ge / all_ge).mean(axis=1)


def bootstrap_statistic(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Stratified percentile-bootstrap CI of any ``statistic(labels, scores)``."""
    y, s = check_binary(labels, scores)
    idx = stratified_bootstrap_indices(y, n_resamples, seed)
    values = np.array([statistic(y[rows], s[rows]) for rows in idx])
    return Estimate(float(statistic(y, s)), *_percentile(values, alpha))


def youden_threshold(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 on the given data.

    Choose it on the out-of-fold (validation) predictions only, then apply it unchanged to the
    external test set: choosing it on the test set would leak the test labels into the result.
    Ties are broken towards the lowest threshold (highest sensitivity, the clinically safer side).
    """
    y, s = check_binary(labels, scores, what="Youden threshold")
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    t = float(thresholds[best[-1]])  # roc_curve sorts thresholds decreasingly: last = lowest
    return t if np.isfinite(t) else float(s.max())


@dataclass(frozen=True)
class AucComparison:
    """Paired bootstrap comparison of two models' ROC AUC on the same patients."""

    auc_a: float
    auc_b: float
    delta: Estimate  # auc_a - auc_b with its CI
    p_value: float  # two-sided

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return {
            "auc_a": self.auc_a,
            "auc_b": self.auc_b,
            "delta": self.delta.to_dict(),
            "p_value": self.p_value,
        }


def paired_bootstrap_auc(
    labels: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> AucComparison:
    """Paired (same resampled patients for both models) stratified bootstrap test of AUC_a - AUC_b.

    The two-sided p-value is twice the smaller fraction of resampled differences on either side of
    zero (percentile-bootstrap test), floored at 1 / n_resamples.
    """
    y, a = check_binary(labels, scores_a, what="model A")
    _, b = check_binary(labels, scores_b, what="model B")
    idx = stratified_bootstrap_indices(y, n_resamples, seed)
    deltas = np.array([skm.roc_auc_score(y[r], a[r]) - skm.roc_auc_score(y[r], b[r]) for r in idx])
    auc_a, auc_b = float(skm.roc_auc_score(y, a)), float(skm.roc_auc_score(y, b))
    p = 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    p = float(min(1.0, max(p, 1.0 / n_resamples)))
    return AucComparison(auc_a, auc_b, Estimate(auc_a - auc_b, *_percentile(deltas, alpha)), p)


def bootstrap_curve_bands(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    kind: str = "roc",
    n_resamples: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    grid_size: int = 101,
) -> dict[str, np.ndarray]:
    """Pointwise bootstrap band of a ROC (TPR vs FPR) or PR (precision vs recall) curve.

    Each resampled curve is interpolated on a common x grid (FPR or recall in [0, 1]); returns
    ``x``, the curve on the observed data ``y``, and the band ``low``/``high``.
    """
    y, s = check_binary(labels, scores)
    grid = np.linspace(0.0, 1.0, grid_size)

    def curve(yy: np.ndarray, ss: np.ndarray) -> np.ndarray:
        if kind == "roc":
            fpr, tpr, _ = skm.roc_curve(yy, ss)
            return np.interp(grid, fpr, tpr)
        if kind == "pr":
            precision, recall, _ = skm.precision_recall_curve(yy, ss)
            # recall decreases along sklearn's arrays; interpolate the step curve on increasing recall
            return np.interp(grid, recall[::-1], precision[::-1])
        raise ValueError(f"kind must be 'roc' or 'pr', got {kind!r}")

    curves = np.stack([curve(y[r], s[r]) for r in stratified_bootstrap_indices(y, n_resamples, seed)])
    low, high = np.percentile(curves, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return {"x": grid, "y": curve(y, s), "low": low, "high": high}


# --- calibration -------------------------------------------------------------------------------


def reliability_curve(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Observed frequency of recurrence vs mean predicted probability per uniform bin (non-empty bins).

    Returns ``mean_predicted``, ``observed`` (scikit-learn's ``calibration_curve``) and ``count``.
    """
    from sklearn.calibration import calibration_curve

    y, p = _check_probabilities(labels, probabilities)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(_bin_index(p, n_bins), minlength=n_bins)
    return {"mean_predicted": predicted, "observed": observed, "count": counts[counts > 0]}


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    # same binning as sklearn's calibration_curve(strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p, side="right")


def expected_calibration_error(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, n_bins: int = 10
) -> float:
    """ECE = sum over uniform bins of (bin size / n) x |observed frequency - mean probability|."""
    y, p = _check_probabilities(labels, probabilities)
    bins = _bin_index(p, n_bins)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(ece)


def _check_probabilities(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y, p = check_binary(labels, probabilities, what="calibration")
    if p.min() < 0 or p.max() > 1:
        raise InputError(f"probabilities must lie in [0, 1]; got range [{p.min():.3g}, {p.max():.3g}]")
    return y, p


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_temperature(labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray) -> float:
    """Temperature T minimising the log-loss of sigmoid(logit(p) / T); fit it on OOF predictions only.

    T > 1 softens over-confident models. Bounded to [0.05, 20] so a perfectly separable OOF set
    cannot drive T to zero.
    """
    from scipy.optimize import minimize_scalar

    y, p = _check_probabilities(labels, probabilities)
    z = _logit(p)

    def nll(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def apply_temperature(probabilities: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities with a fitted temperature (ranking, hence AUC, is unchanged)."""
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    return 1 / (1 + np.exp(-_logit(np.asarray(probabilities, dtype=np.float64)) / temperature))
