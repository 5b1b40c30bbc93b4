"""The operating point: how the served threshold is chosen on OOF predictions (unit level)."""

from __future__ import annotations

import numpy as np
import pytest

from gliodeploy.contract import describe_operating_point
from gliodeploy.errors import ConfigError, ModelError
from gliodeploy.evaluation.operating_point import (
    OperatingPoint,
    choose_operating_point,
    parse_method,
    read_operating_point,
    write_operating_point,
)

rng = np.random.default_rng(0)
Y = np.array([0] * 30 + [1] * 70)
P = np.clip(0.4 + 0.25 * Y + rng.normal(0, 0.15, Y.size), 0.01, 0.99)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("youden", ("youden", None)), ("sensitivity:0.9", ("sensitivity", 0.9)), ("0.62", ("fixed", 0.62))],
)
def test_parse_method(text: str, expected: tuple) -> None:
    assert parse_method(text) == expected


@pytest.mark.parametrize("text", ["best", "sensitivity:1.5", "1.2", "0", "specificity:"])
def test_parse_method_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_method(text)


def test_targets_are_met_on_the_oof_predictions() -> None:
    sens = choose_operating_point(Y, P, "sensitivity:0.9", validation_mode="final", n_resamples=200)
    assert (P[Y == 1] >= sens.threshold).mean() >= 0.9 and sens.sensitivity["value"] >= 0.9
    spec = choose_operating_point(Y, P, "specificity:0.8", validation_mode="final", n_resamples=200)
    assert (P[Y == 0] < spec.threshold).mean() >= 0.8 and spec.specificity["value"] >= 0.8
    assert spec.threshold >= sens.threshold  # a stricter specificity needs a higher threshold
    youden = choose_operating_point(Y, P, validation_mode="final", n_resamples=200)
    s, c = youden.sensitivity, youden.specificity
    assert s["ci_low"] <= s["value"] <= s["ci_high"] and c["ci_low"] <= c["value"] <= c["ci_high"]
    assert "youden on 100 out-of-fold predictions, final validation" in describe_operating_point(
        youden.to_dict()
    )


def test_calibrated_point_is_chosen_on_the_scaled_probabilities() -> None:
    op = choose_operating_point(Y, P, validation_mode="final", calibrate=True, n_resamples=200)
    assert op.temperature is not None and op.temperature > 0 and "temperature-scaled" in op.fitted_on


def test_study_mode_is_described_as_optimistic() -> None:
    op = choose_operating_point(Y, P, validation_mode="study", n_resamples=200)
    assert "optimistic" in op.summary()


def test_round_trip_and_corrupt_file(tmp_path) -> None:
    op = choose_operating_point(Y, P, validation_mode="final", n_resamples=200)
    write_operating_point(tmp_path, op)
    assert read_operating_point(tmp_path) == OperatingPoint.from_dict(op.to_dict())
    assert read_operating_point(tmp_path / "missing") is None
    (tmp_path / "operating_point.json").write_text('{"threshold": 1.5}')
    with pytest.raises(ModelError, match="operating_point.json"):
        read_operating_point(tmp_path)
