"""Turn predictions into the numbers of the report (``metrics.json``), like the study's tables.

For every run: validation = the out-of-fold (OOF) predictions of cross-validation; test = the
fold-ensemble mean probability on ``split == "test"``. Two decision thresholds are reported: 0.5 and
the run's operating point (gliodeploy.evaluation.operating_point), chosen **on OOF only** and applied
unchanged to the test set. Temperature scaling is fitted on OOF and only changes calibration (never
the ranking). A run trained with ``validation = "study"`` (epoch chosen on the validation fold) is
flagged optimistic, and :func:`learning_diagnosis` says in words when a model did not learn. The
TBR baseline is evaluated the same way, with the literature's cut-offs and a Youden cut-off chosen on
the training split.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gliodeploy.evaluation import metrics as M
from gliodeploy.evaluation.baseline import LITERATURE_CUTOFFS
from gliodeploy.evaluation.operating_point import OperatingPoint
from gliodeploy.evaluation.rundata import Predictions, RunData


@dataclass(frozen=True)
class BootstrapSettings:
    """How confidence intervals are computed (recorded in metrics.json)."""

    n_resamples: int = 2000
    seed: int = 0
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": 1 - self.alpha,
            "method": "percentile bootstrap, stratified by class (class counts kept in every resample)",
        }


def _split_summary(
    pred: Predictions, thresholds: dict[str, float], boot: BootstrapSettings
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": int(pred.labels.size),
        "n_positive": int(pred.labels.sum()),
        "thresholds": {},
    }
    for label, t in thresholds.items():
        est = M.bootstrap_metrics(
            pred.labels, pred.scores, t, n_resamples=boot.n_resamples, seed=boot.seed, alpha=boot.alpha
        )
        pred_pos = pred.scores >= t
        y = pred.labels.astype(bool)
        out["thresholds"][label] = {
            "threshold": float(t),
            "metrics": {k: v.to_dict() for k, v in est.items()},
            "confusion": {
                "tp": int((pred_pos & y).sum()),
                "fn": int((~pred_pos & y).sum()),
                "fp": int((pred_pos & ~y).sum()),
                "tn": int((~pred_pos & ~y).sum()),
            },
        }
    return out


def _fold_spread(pred: Predictions, threshold: float) -> dict[str, Any]:
    """Each fold model alone on the test set: the spread the ensemble averages out."""
    assert pred.fold_scores is not None
    per_fold = []
    for k in range(pred.fold_scores.shape[1]):
        per_fold.append({"fold": k, **M.point_metrics(pred.labels, pred.fold_scores[:, k], threshold)})
    spread = {
        name: {
            "mean": float(np.mean([f[name] for f in per_fold])),
            "sd": float(np.std([f[name] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0,
            "min": float(np.min([f[name] for f in per_fold])),
            "max": float(np.max([f[name] for f in per_fold])),
        }
        for name in M.METRIC_NAMES
    }
    return {"per_fold": per_fold, "spread": spread}


def _temperature_scaled(pred: Predictions, temperature: float | None) -> Predictions:
    """Scores as the exported graph computes them: temperature on every fold's logit, then the mean."""
    if not temperature:
        return pred
    if pred.fold_scores is not None:
        folds = M.apply_temperature(pred.fold_scores, temperature)
        return dataclasses.replace(pred, scores=folds.mean(axis=1), fold_scores=folds)
    return dataclasses.replace(pred, scores=M.apply_temperature(pred.scores, temperature))


def _fold_agreement(pred: Predictions, threshold: float) -> dict[str, float]:
    """How often the ensemble's decision equals each fold's alone (the averaging's effect on decisions)."""
    assert pred.fold_scores is not None
    ens = pred.scores >= threshold
    folds = pred.fold_scores >= threshold
    return {
        "decisions_equal_to_ensemble": float((folds == ens[:, None]).mean()),
        "scans_all_folds_agree": float((folds.all(axis=1) | (~folds).all(axis=1)).mean()),
    }


def learning_diagnosis(result: dict[str, Any], oof: Predictions, test: Predictions | None) -> list[str]:
    """What a reader must know about whether the model learned, in words (empty list: nothing alarming).

    The numbers are in the tables; these sentences say what they mean, so a model that did not learn
    is never presented as one that did.
    """
    notes: list[str] = []
    auc = result["validation"]["thresholds"]["0.5"]["metrics"]["roc_auc"]
    if result.get("validation_mode") == "study":
        notes.append(
            "The out-of-fold figures come from models selected on these same patients (validation = "
            "'study', the 2024 study's protocol): they are optimistic. Retrain with the default "
            "validation = 'final' for an unbiased estimate."
        )
    if auc["low"] <= 0.5:
        notes.append(
            f"No evidence that the model learned: the out-of-fold AUC is {auc['value']:.2f} and its 95 % CI "
            f"({auc['low']:.2f}-{auc['high']:.2f}) includes 0.5 (chance)."
        )
    q1, q3 = np.percentile(oof.scores, [25, 75])
    if q3 - q1 < 0.05:
        notes.append(
            f"Probabilities barely spread: the out-of-fold interquartile range is {q3 - q1:.3f} "
            f"({q1:.2f}-{q3:.2f}); the model gives nearly every patient the same probability."
        )
    op = result.get("operating_point")
    if op is not None:
        for split, pred in (("out-of-fold", oof), ("external test", test)):
            if pred is None:
                continue
            calls = pred.scores >= op["threshold"]
            if calls.all() or not calls.any():
                word = "recurrence" if calls.all() else "treatment-related change"
                notes.append(
                    f"At the operating point ({op['threshold']:.3g}) every {split} scan is called '{word}'."
                )
    if test is not None and result.get("test"):
        tauc = result["test"]["thresholds"]["0.5"]["metrics"]["roc_auc"]
        if not math.isnan(tauc["low"]) and tauc["low"] <= 0.5:
            notes.append(
                f"On the external test set the AUC is {tauc['value']:.2f} with a 95 % CI "
                f"({tauc['low']:.2f}-{tauc['high']:.2f}) that includes 0.5: no evidence it transfers."
            )
    prior = result.get("built_in_prior")
    if prior and prior["validation"]["delta"]["high"] < 0:
        notes.append(
            "Training made the model worse than its untrained design (overfitting): "
            + prior_sentence(prior)
            + " Train fewer epochs or regularise more; the untrained prior scored these patients better."
        )
    elif prior and prior["validation"]["delta"]["low"] <= 0:
        notes.append(
            "Training added no measurable discrimination to the model's design: "
            + prior_sentence(prior)
            + " What this model scores comes from its built-in prior, not from these patients."
        )
    if result.get("localisation"):  # Grad-CAM over the test recurrences (gliodeploy.explain.cohort)
        from gliodeploy.explain.localisation import localisation_diagnosis

        notes.extend(localisation_diagnosis(result["localisation"]))
    return notes


def prior_sentence(prior: dict[str, Any]) -> str:
    """One sentence: the trained folds against the untrained model's built-in prior (see
    :func:`gliodeploy.evaluation.inference.untrained_prior`)."""

    def part(c: dict[str, Any], where: str) -> str:
        return (
            f"{where} AUC {c['auc_a']:.3f} trained vs {c['auc_b']:.3f} untrained "
            f"(difference {M.Estimate(**c['delta']).format_signed()}, paired bootstrap, n = {c['n']})"
        )

    parts = [part(prior["validation"], "out-of-fold")]
    if prior.get("test"):
        parts.append(part(prior["test"], "external test"))
    return f"against {prior['description']}: " + "; ".join(parts) + "."


def evaluate_run(
    name: str,
    oof: Predictions,
    test: Predictions | None,
    boot: BootstrapSettings,
    *,
    operating_point: OperatingPoint | None = None,
    validation_mode: str = "study",
    localisation: dict[str, Any] | None = None,
    prior: tuple[str, Predictions, Predictions | None] | None = None,
) -> dict[str, Any]:
    """Metrics of one run on validation (OOF) and, if given, the external test set.

    ``operating_point`` (chosen on these OOF predictions) adds its threshold beside 0.5; with a
    temperature, both splits are scored as the exported graph scores them. ``validation_mode`` is the
    run's ``training.validation`` (runs without one selected on the fold: ``"study"``).
    ``localisation`` (``gliodeploy.explain.cohort.explain_cohort``: Grad-CAM peak vs true lesion
    centre over the test recurrences) is stored as ``result["localisation"]`` and read by the diagnosis.
    ``prior`` = ``(description, OOF, test)`` scores of the untrained model when its architecture
    scores something before training (``inference.untrained_prior``): the paired AUC difference,
    trained minus untrained, goes to ``result["built_in_prior"]`` and the diagnosis says when training
    added nothing measurable.
    """
    youden = M.youden_threshold(oof.labels, oof.scores)
    temperature = M.fit_temperature(oof.labels, oof.scores)
    thresholds = {"0.5": M.DEFAULT_THRESHOLD}
    if operating_point is not None:
        oof = _temperature_scaled(oof, operating_point.temperature)
        test = _temperature_scaled(test, operating_point.temperature) if test is not None else None
        thresholds["operating_point"] = operating_point.threshold
    result: dict[str, Any] = {
        "name": name,
        "validation_mode": validation_mode,
        "optimistic": validation_mode == "study",
        "operating_point": operating_point.to_dict() if operating_point is not None else None,
        "youden_threshold": youden,
        "temperature": temperature,
        "validation": _split_summary(oof, thresholds, boot),
        "test": None,
    }
    q = np.percentile(oof.scores, [25, 50, 75])
    result["validation"]["probability_quartiles"] = [float(v) for v in q]
    result["validation"]["ece"] = M.expected_calibration_error(oof.labels, oof.scores)
    result["validation"]["ece_temperature_scaled"] = M.expected_calibration_error(
        oof.labels, M.apply_temperature(oof.scores, temperature)
    )
    if test is not None:
        result["test"] = _split_summary(test, thresholds, boot)
        result["test"]["probability_quartiles"] = [float(v) for v in np.percentile(test.scores, [25, 50, 75])]
        result["test"]["ece"] = M.expected_calibration_error(test.labels, test.scores)
        result["test"]["ece_temperature_scaled"] = M.expected_calibration_error(
            test.labels, M.apply_temperature(test.scores, temperature)
        )
        if test.fold_scores is not None:
            result["test"]["folds"] = _fold_spread(test, M.DEFAULT_THRESHOLD)
            if operating_point is not None:
                result["test"]["fold_agreement"] = _fold_agreement(test, operating_point.threshold)
    if localisation is not None:
        result["localisation"] = localisation
    if prior is not None:
        description, prior_oof, prior_test = prior
        result["built_in_prior"] = {
            "description": description,
            "validation": compare_auc(oof, prior_oof, boot),
            "test": compare_auc(test, prior_test, boot)
            if test is not None and prior_test is not None
            else None,
        }
    result["diagnosis"] = learning_diagnosis(result, oof, test)
    return result


def evaluate_baseline(
    train: Predictions, test: Predictions | None, boot: BootstrapSettings, *, score: str = "tbr_max"
) -> dict[str, Any]:
    """The static-parameter baseline: literature cut-offs and Youden on the training split."""
    youden = M.youden_threshold(train.labels, train.scores)
    thresholds = {f"{c:g}": c for c in LITERATURE_CUTOFFS} | {"youden": youden}
    return {
        "name": f"{score} baseline",
        "score": score,
        "youden_threshold": youden,
        "validation": _split_summary(train, thresholds, boot),
        "test": _split_summary(test, thresholds, boot) if test is not None else None,
    }


def compare_auc(a: Predictions, b: Predictions, boot: BootstrapSettings) -> dict[str, Any]:
    """Paired bootstrap AUC difference of two score sets, matched by subject."""
    b_by = dict(zip(b.subjects, b.scores, strict=True))
    common = [i for i, s in enumerate(a.subjects) if s in b_by]
    sa = a.scores[common]
    sb = np.array([b_by[a.subjects[i]] for i in common])
    cmp_ = M.paired_bootstrap_auc(a.labels[common], sa, sb, n_resamples=boot.n_resamples, seed=boot.seed)
    return {"n": len(common), **cmp_.to_dict()}


def comparison_table(runs: list[dict[str, Any]], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Flat rows (model, split, threshold, metrics) in the order of the study's tables."""
    rows = []
    for split in ("validation", "test"):
        for entry in [*runs, *([baseline] if baseline else [])]:
            summary = entry.get(split)
            if not summary:
                continue
            for label, block in summary["thresholds"].items():
                rows.append(
                    {
                        "model": entry["name"],
                        "split": split,
                        "threshold_name": label,
                        "threshold": block["threshold"],
                        "n": summary["n"],
                        "metrics": block["metrics"],
                    }
                )
    return rows


def selection_bias(run: RunData) -> dict[str, Any] | None:
    """What the study's protocol would have reported on this very run: its selection bias, measured.

    Every epoch's per-patient validation loss is logged (``val_loss_per_patient.csv``); with the
    unweighted BCE used for it, a patient's probability at any epoch is recovered exactly
    (``p = exp(-loss)`` for a recurrence, ``1 - exp(-loss)`` otherwise). Choosing in each fold the
    epoch with the lowest mean validation loss (the study's rule) and pooling those probabilities gives
    the OOF AUC the study would have reported for the same training trajectories. Returns None where it
    cannot be computed (another loss, missing logs) or makes no sense (a run already selected that way).
    """
    training = run.plans.get("training") or {}
    mode = (run.plans.get("validation") or {}).get("mode", "study")
    if mode == "study" or training.get("loss", "bce") != "bce" or not run.fold_logs:
        return None
    label = dict(zip(run.oof.subjects, run.oof.labels.tolist(), strict=True))
    subjects, selected, final = [], [], []
    for log in run.fold_logs:
        names = [s for s in log.patient_losses if s in label]
        if not names:
            return None
        losses = np.array([log.patient_losses[s] for s in names], dtype=np.float64)  # [patients, epochs]
        if losses.ndim != 2 or losses.shape[1] == 0 or not np.isfinite(losses).all():
            return None
        best = int(np.argmin(losses.mean(axis=0)))
        y = np.array([label[s] for s in names])
        for epoch, out in ((best, selected), (losses.shape[1] - 1, final)):
            q = np.exp(-losses[:, epoch])
            out.extend(np.where(y == 1, q, 1.0 - q).tolist())
        subjects += names
    y = np.array([label[s] for s in subjects])
    if len(set(y.tolist())) < 2:
        return None
    auc_selected = M.point_metrics(y, np.array(selected))["roc_auc"]
    auc_final = M.point_metrics(y, np.array(final))["roc_auc"]
    return {
        "n": int(y.size),
        "oof_auc_final_epoch": float(auc_final),
        "oof_auc_if_selected_on_validation_fold": float(auc_selected),
        "optimism": float(auc_selected - auc_final),
        "method": "per fold, the epoch with the lowest mean validation-fold BCE (the 2024 study's rule), "
        "probabilities recovered from the logged per-patient losses",
    }
