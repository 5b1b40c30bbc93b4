"""The operating point that travels with a model: a decision threshold chosen on honest OOF predictions.

What it is fitted on, precisely: the pooled out-of-fold (OOF) probabilities of cross-validation,
where each training patient is scored by the one fold model that never trained on it. The served
score is the mean of the K fold models' probabilities; each of those K probabilities is the same
kind of quantity as an OOF probability (one fold model on an unseen scan), so the mean lives on
the same scale and the threshold applies to it unchanged. ``gliodeploy evaluate`` reports, on the
test split, how often the ensemble's decision agrees with each fold's, which shows how much the
averaging moves decisions across the threshold.

Optional temperature scaling (``calibrate=True``) is fitted on the same OOF probabilities; the
threshold is then chosen on the temperature-scaled probabilities and the export applies the same
temperature to every fold's logit inside the graph, so the served probability is on the scale the
threshold was chosen on.

Sensitivity and specificity at the chosen point come with stratified bootstrap CIs over the OOF
patients. Because the threshold is chosen on those same patients, they are slightly optimistic;
the external test set is the unbiased check.

Written by ``gliodeploy evaluate`` to ``RUN_DIR/operating_point.json`` (atomically), read by
``gliodeploy export``, published in the version's metadata (covered by its checksums) and in the
configuration parameters the client reads.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy.contract import describe_operating_point as describe
from gliodeploy.errors import ConfigError, ModelError

OPERATING_POINT_FILE = "operating_point.json"
#: Accepted ``--operating-point`` forms.
METHOD_HELP = "youden, sensitivity:0.90, specificity:0.80 or a fixed threshold in (0, 1) such as 0.62"

_TARGET = re.compile(r"^(sensitivity|specificity):(0?\.\d+|1(\.0*)?)$")


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on P(recurrence) with where it came from and what to expect at it."""

    threshold: float
    method: str  # "youden", "sensitivity>=0.90", "specificity>=0.80" or "fixed"
    fitted_on: str  # in words
    validation_mode: str  # final | inner | study (training.validation of the run)
    n: int
    n_positive: int
    sensitivity: dict[str, float] | None  # {"value", "ci_low", "ci_high"}; None without OOF data
    specificity: dict[str, float] | None
    temperature: float | None = None  # applied to every fold's logit before the sigmoid, if set
    oof_sha256: str | None = None  # of the oof_predictions.csv it was fitted on
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "operating point") -> OperatingPoint:
        """Validate a dict written by :meth:`to_dict` (ModelError naming ``source`` if malformed)."""
        try:
            op = cls(**data)
            t = float(op.threshold)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed operating point: {exc}") from exc
        if not 0.0 < t < 1.0:
            raise ModelError(f"{source}: threshold {t} is not in (0, 1)")
        if op.temperature is not None and not float(op.temperature) > 0:
            raise ModelError(f"{source}: temperature must be > 0, got {op.temperature}")
        return op

    def summary(self) -> str:
        """One line for people: ``0.612 (Youden on 100 OOF predictions, final-epoch validation): ...``."""
        return describe(self.to_dict())


def parse_method(text: str) -> tuple[str, float | None]:
    """``"youden"`` -> ("youden", None); ``"sensitivity:0.9"`` -> ("sensitivity", 0.9);
    ``"0.6"`` -> ("fixed", 0.6)."""
    text = text.strip().lower()
    if text == "youden":
        return "youden", None
    m = _TARGET.match(text)
    if m:
        target = float(m.group(2))
        if not 0 < target <= 1:
            raise ConfigError(f"operating point target must be in (0, 1], got {text!r}")
        return m.group(1), target
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"unknown operating point {text!r}; use {METHOD_HELP}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"a fixed threshold must be in (0, 1), got {value}")
    return "fixed", value


def _threshold_for_target(y: np.ndarray, s: np.ndarray, kind: str, target: float) -> float:
    """Highest threshold with OOF sensitivity >= target, or lowest with specificity >= target."""
    cands = np.unique(s)  # ascending; a candidate t predicts recurrence for s >= t
    pos, neg = s[y == 1], s[y == 0]
    if kind == "sensitivity":
        ok = [t for t in cands if (pos >= t).mean() >= target - 1e-12]
        return float(max(ok))  # the lowest candidate always reaches sensitivity 1
    ok = [t for t in cands if (neg < t).mean() >= target - 1e-12]
    if not ok:  # only "above every score" reaches the target: nothing is called recurrence
        return float(np.nextafter(s.max(), np.inf))
    return float(min(ok))


def choose_operating_point(
    labels: np.ndarray,
    probabilities: np.ndarray,
    method: str = "youden",
    *,
    validation_mode: str,
    calibrate: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
    oof_sha256: str | None = None,
) -> OperatingPoint:
    """Choose the operating point on OOF ``probabilities`` (see the module docstring)."""
    from gliodeploy.evaluation import metrics as M

    kind, value = parse_method(method)
    y, p = M.check_binary(labels, probabilities, what="operating point")
    temperature = None
    if calibrate:
        temperature = M.fit_temperature(y, p)
        p = M.apply_temperature(p, temperature)
    if kind == "youden":
        threshold, name = M.youden_threshold(y, p), "youden"
    elif kind == "fixed":
        assert value is not None
        threshold, name = value, "fixed"
    else:
        assert value is not None
        threshold, name = _threshold_for_target(y, p, kind, value), f"{kind}>={value:.2f}"
    threshold = float(min(max(threshold, 1e-6), 1 - 1e-6))
    est = M.bootstrap_metrics(y, p, threshold, n_resamples=n_resamples, seed=seed)
    fitted = (
        "pooled out-of-fold probabilities (each patient scored by the one fold model that did not "
        "train on it)" + ("; temperature-scaled" if calibrate else "")
    )
    if kind == "fixed":
        fitted = "given by the user; sensitivity/specificity measured on " + fitted

    def ci(name: str) -> dict[str, float]:
        e = est[name]
        return {"value": float(e.value), "ci_low": float(e.low), "ci_high": float(e.high)}

    return OperatingPoint(
        threshold=threshold,
        method=name,
        fitted_on=fitted,
        validation_mode=validation_mode,
        n=int(y.size),
        n_positive=int(y.sum()),
        sensitivity=ci("sensitivity"),
        specificity=ci("specificity"),
        temperature=temperature,
        oof_sha256=oof_sha256,
    )


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (ties an operating point to the OOF predictions it was fitted on)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_operating_point(run_dir: Path, op: OperatingPoint) -> Path:
    """``RUN_DIR/operating_point.json``, written atomically."""
    from gliodeploy.utils.atomic import atomic_write

    return atomic_write(Path(run_dir) / OPERATING_POINT_FILE, json.dumps(op.to_dict(), indent=2) + "\n")


def read_operating_point(run_dir: Path) -> OperatingPoint | None:
    """The run's operating point, or None if it was never evaluated.

    Raises ModelError if the file is corrupt or was fitted on other OOF predictions than the run's
    current ``oof_predictions.csv`` (the run was retrained since: evaluate it again).
    """
    path = Path(run_dir) / OPERATING_POINT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"corrupt {path}: not a JSON object")
    op = OperatingPoint.from_dict(data, source=str(path))
    oof = Path(run_dir) / "oof_predictions.csv"
    if op.oof_sha256 and oof.is_file() and file_sha256(oof) != op.oof_sha256:
        raise ModelError(
            f"{path} was chosen on other out-of-fold predictions than {oof} (the run was retrained): "
            f"run `gliodeploy evaluate {run_dir}` again"
        )
    return op
