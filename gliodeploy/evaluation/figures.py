"""Report figures as PNG bytes (matplotlib's object API with the Agg canvas: no pyplot, no display)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gliodeploy.evaluation import metrics as M
from gliodeploy.evaluation.rundata import FoldLog, Predictions

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def roc_pr_figure(curves: Sequence[tuple[str, Predictions]], title: str, *, n_resamples: int = 200) -> bytes:
    """ROC and precision-recall curves, each with a pointwise 95 % bootstrap band."""
    fig = Figure(figsize=(10, 4.4))
    ax_roc, ax_pr = fig.subplots(1, 2)
    for i, (label, pred) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        auc = M.point_metrics(pred.labels, pred.scores)["roc_auc"]
        ap = M.point_metrics(pred.labels, pred.scores)["average_precision"]
        for ax, kind, text in ((ax_roc, "roc", f"AUC {auc:.3f}"), (ax_pr, "pr", f"AP {ap:.3f}")):
            band = M.bootstrap_curve_bands(pred.labels, pred.scores, kind=kind, n_resamples=n_resamples)
            ax.plot(band["x"], band["y"], color=color, label=f"{label} ({text})")
            ax.fill_between(band["x"], band["low"], band["high"], color=color, alpha=0.15, linewidth=0)
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    ax_roc.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=f"ROC - {title}")
    prevalence = float(np.mean(curves[0][1].labels)) if curves else 0.5
    ax_pr.axhline(prevalence, ls=":", color="grey")
    ax_pr.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=f"Precision-recall - {title}")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    return _png(fig)


def calibration_figure(curves: Sequence[tuple[str, Predictions]], n_bins: int = 10) -> bytes:
    """Reliability diagram: observed recurrence frequency vs mean predicted probability per bin."""
    fig = Figure(figsize=(5, 4.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for i, (label, pred) in enumerate(curves):
        curve = M.reliability_curve(pred.labels, pred.scores, n_bins=n_bins)
        ece = M.expected_calibration_error(pred.labels, pred.scores, n_bins=n_bins)
        ax.plot(
            curve["mean_predicted"],
            curve["observed"],
            "o-",
            color=COLORS[i % len(COLORS)],
            label=f"{label} (ECE {ece:.3f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(recurrence)", ylabel="observed frequency")
    ax.set_title("Calibration")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def confusion_figure(blocks: Sequence[tuple[str, dict[str, int]]]) -> bytes:
    """One 2x2 confusion matrix per (title, {tp, fn, fp, tn}) block; rows = truth, columns = prediction."""
    n = max(len(blocks), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (title, c) in zip(axes, blocks, strict=False):
        mat = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        ax.imshow(mat, cmap="Blues", vmin=0, vmax=max(int(mat.max()), 1))
        for (r, k), v in np.ndenumerate(mat):
            dark = v > mat.max() / 2  # white digits on dark cells
            ax.text(k, r, str(v), ha="center", va="center", color="white" if dark else "black", fontsize=12)
        ax.set_xticks([0, 1], ["TRC", "recurrence"])
        ax.set_yticks([0, 1], ["TRC", "recurrence"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
    for ax in axes[len(blocks) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def loss_curves_figure(fold_logs: Sequence[FoldLog]) -> bytes:
    """Training (dashed) and validation (solid) loss per epoch, one colour per fold."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for log in fold_logs:
        color = COLORS[log.fold % len(COLORS)]
        for key, style in (("train_loss", "--"), ("val_loss", "-")):
            pts = [(e.get("epoch", i), e[key]) for i, e in enumerate(log.epochs) if e.get(key) is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, style, color=color, label=f"fold {log.fold} {key.split('_')[0]}")
    ax.set(xlabel="epoch", ylabel="loss", title="Training (dashed) and validation (solid) loss per fold")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no epoch logs found", ha="center", transform=ax.transAxes)
    return _png(fig)


def patient_loss_figure(fold_logs: Sequence[FoldLog], suspects: set[str]) -> bytes:
    """Each validation patient's loss over epochs; suspect labels in red and named."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for log in fold_logs:
        for subject, losses in log.patient_losses.items():
            flagged = subject in suspects
            ax.plot(
                np.arange(len(losses)),  # epoch_0, epoch_1, ... as in log.jsonl
                losses,
                color="#d62728" if flagged else "#999999",
                alpha=0.95 if flagged else 0.35,
                lw=1.8 if flagged else 0.8,
                zorder=3 if flagged else 1,
            )
            if flagged:
                ax.annotate(subject, (len(losses) - 1, losses[-1]), fontsize=7, color="#d62728")
    ax.set(xlabel="epoch", ylabel="validation loss", title="Per-patient validation loss (red: suspect label)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not ax.lines:
        ax.text(0.5, 0.5, "no per-patient losses found", ha="center", transform=ax.transAxes)
    return _png(fig)


def class_distribution_figure(records: Sequence[tuple[str, str, str, int]]) -> bytes:
    """Stacked bars of recurrence/TRC per (split, site, scanner) from (split, site, scanner, label)."""
    counts = Counter(records)
    groups = sorted({(sp, si, sc) for sp, si, sc, _ in records})
    fig = Figure(figsize=(max(5, 1.3 * len(groups) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(groups))
    rec = np.array([counts[(*g, 1)] for g in groups])
    trc = np.array([counts[(*g, 0)] for g in groups])
    ax.bar(x, rec, color="#d62728", label="recurrence")
    ax.bar(x, trc, bottom=rec, color="#1f77b4", label="TRC")
    for i in range(len(groups)):
        total = rec[i] + trc[i]
        ax.text(i, total, f"{rec[i] / max(total, 1):.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{sp}\n{si}\n{sc}" for sp, si, sc in groups], fontsize=8)
    ax.set(ylabel="patients", title="Class distribution per split / site / scanner (% recurrence)")
    ax.legend(fontsize=8)
    return _png(fig)


def baseline_scatter_figure(pred: Predictions, cutoffs: dict[str, float], title: str) -> bytes:
    """The baseline score per patient by true class, with its cut-offs."""
    rng = np.random.default_rng(0)  # fixed jitter: the figure is reproducible
    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    for label, color, name in ((0, "#1f77b4", "TRC"), (1, "#d62728", "recurrence")):
        s = pred.scores[pred.labels == label]
        ax.scatter(label + rng.uniform(-0.15, 0.15, s.size), s, color=color, s=14, alpha=0.8, label=name)
    for i, (name, c) in enumerate(cutoffs.items()):
        ax.axhline(c, ls="--", color=COLORS[(i + 2) % len(COLORS)], lw=1, label=f"cut-off {name} = {c:.2f}")
    ax.set_xticks([0, 1], ["TRC", "recurrence"])
    ax.set(ylabel="score", title=title)
    ax.legend(fontsize=7)
    return _png(fig)
