"""`gliodeploy distill` and `gliodeploy export --distilled`: one narrower network trained on the ensemble's
probabilities, compared with it on the held-out scans, shipped only within 0.02 AUC of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_experiment import write_tiny_experiment

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app

pytest.importorskip("torch")


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run_app(app, args)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-fold tiny lesionnet run (2 epochs) on a cohort with an external split, evaluated."""
    from gliodeploy.synth import generate_cohort

    root = tmp_path_factory.mktemp("distill")
    # n=32, seed=0, tiny: both labels in every training stratum and in the external split
    manifest = generate_cohort(root / "cohort", n=32, seed=0, size="tiny", test_fraction=0.3, progress=False)
    write_tiny_experiment(
        root / "tiny.toml",
        "tiny_lesionnet",
        model={"name": "lesionnet", "width": 1.0},
        preprocessing={"normalization": "tbr"},
        training={"max_steps_per_epoch": 2},
    )
    run = root / "run"
    assert _cli(["train", str(root / "tiny.toml"), "--manifest", str(manifest), "--out", str(run), "-q"]) == 0
    assert _cli(["evaluate", str(run), "--bootstrap", "100", "--no-localisation", "--no-baseline"]) == 0
    return run


def test_distill_then_export_the_student(evaluated_run: Path, tmp_path: Path, capsys) -> None:
    run = evaluated_run
    assert _cli(["distill", str(run), "--epochs", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "distilled 2 folds into one lesionnet (width 0.5)" in out
    assert "held-out AUC: student" in out and "decisions agree on" in out
    info = json.loads((run / "distilled" / "distill.json").read_text())
    cmp = info["comparison"]
    assert cmp["n"] == len(cmp["student"]) == len(cmp["ensemble"]) > 0
    assert info["parameters"]["student"] < info["parameters"]["ensemble"] / 4
    assert info["model"]["width"] == 0.5 and info["teacher"]["folds"] == 2

    # A second distill does not silently replace the first.
    assert _cli(["distill", str(run), "--epochs", "1", "-q"]) != 0
    assert "--force" in capsys.readouterr().err
    assert json.loads((run / "distilled" / "distill.json").read_text()) == info
    # --force trains a new one in its place, and leaves nothing else beside it.
    assert _cli(["distill", str(run), "--epochs", "2", "--force", "-q"]) == 0
    info = json.loads((run / "distilled" / "distill.json").read_text())
    assert info["settings"]["epochs"] == 2 and len(info["losses"]) == 2
    assert not [p.name for p in run.iterdir() if p.name.startswith(".distilled")]

    # The deployability rule decides; export ships the one network with the ensemble's threshold.
    from gliodeploy.training.distill import load_distilled

    _, record = load_distilled(run)
    ok, why = record.deployable()
    repo = tmp_path / "repo"
    code = _cli(["export", str(run), "--distilled", "--out", str(repo)])
    if not ok:  # a 2-epoch student may miss the rule on 10 scans: then the refusal is what must show
        assert code != 0 and not repo.exists()
        return
    assert code == 0, capsys.readouterr().err
    meta = json.loads((repo / "gliodeploy_ensemble" / "1" / "metadata.json").read_text())
    assert meta["folds"] == 1 and meta["architecture"]["width"] == 0.5
    assert meta["distillation"]["verdict"] == why and "student" not in meta["distillation"]["comparison"]
    op = json.loads((run / "operating_point.json").read_text())
    assert meta["threshold"] == pytest.approx(op["threshold"])
    assert "inherits" in meta["operating_point"]["fitted_on"]


def test_export_refuses_a_student_outside_the_rule(evaluated_run: Path, tmp_path: Path, capsys) -> None:
    run = evaluated_run
    if not (run / "distilled").is_dir():
        assert _cli(["distill", str(run), "--epochs", "1", "-q"]) == 0
    path = run / "distilled" / "distill.json"
    saved = path.read_text()
    try:
        info = json.loads(saved)
        info["comparison"].update(auc_ensemble=0.90, auc_student=0.85)
        path.write_text(json.dumps(info))
        repo = tmp_path / "repo"
        assert _cli(["export", str(run), "--distilled", "--out", str(repo)]) != 0
        err = capsys.readouterr().err
        assert "refusing to export the distilled model" in err and "0.050 below" in err
        assert not repo.exists()
        info["comparison"] = None  # never compared with the ensemble: not shipped either
        path.write_text(json.dumps(info))
        assert _cli(["export", str(run), "--distilled", "--out", str(repo)]) != 0
        assert "never compared" in capsys.readouterr().err
    finally:
        path.write_text(saved)


def test_distill_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert _cli(["distill", str(tmp_path / "nope")]) != 0
    assert _cli(["distill", str(tmp_path), "--width", "1.5"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--width must be in (0, 1]" in err
    assert _cli(["export", str(tmp_path), "--distilled", "--out", str(tmp_path / "r")]) != 0
    assert "Traceback" not in capsys.readouterr().err
