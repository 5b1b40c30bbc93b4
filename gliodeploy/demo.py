"""``gliodeploy demo``: the whole mission on the embedded synthetic cohort, in one command.

synthetic cohort -> cross-validated training -> evaluation report (CNN vs TBR baseline) -> Grad-CAM of one
scan -> export to a Triton model repository -> ``gliodeploy verify`` -> real Triton server ->
``gliodeploy-client predict`` on the external-site scans -> summary of every artefact -> server stopped.

Each step runs the same command a user would type (printed before it runs), in a child process, so the
demo doubles as a worked example and a failure points at one command. The server is started in-process
and is always stopped, whatever happens.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer

from gliodeploy.errors import ConfigError, GliodeployError

_REPO_ROOT = Path(__file__).resolve().parents[1]
_MARKER = ".gliodeploy-demo"


class DemoStepError(GliodeployError):
    """A step of the demo exited non-zero (its own error message is printed above)."""

    exit_code = 1


@dataclass
class _Steps:
    """Runs and times the demo's steps; prints each command before it runs."""

    total: int
    timings: list[tuple[str, float]] = field(default_factory=list)

    def run(self, title: str, argv: list[str]) -> None:
        index = len(self.timings) + 1
        shown = " ".join(shlex.quote(a) for a in _display(argv))
        typer.secho(f"\n[{index}/{self.total}] {title}", bold=True)
        typer.echo(f"$ {shown}")
        start = time.perf_counter()
        rc = subprocess.call(argv)
        elapsed = time.perf_counter() - start
        self.timings.append((title, elapsed))
        if rc != 0:
            raise DemoStepError(f"step '{title}' failed with exit code {rc} (command: {shown})")
        typer.echo(f"    done in {elapsed:.1f} s")

    def timed(self, title: str, elapsed: float) -> None:
        self.timings.append((title, elapsed))


def _display(argv: list[str]) -> list[str]:
    """Show ``python -m gliodeploy.cli`` as the console script a user would type."""
    if argv[:3] == [sys.executable, "-m", "gliodeploy.cli"]:
        return ["gliodeploy", *argv[3:]]
    if argv[:3] == [sys.executable, "-m", "gliodeploy.client.cli"]:
        return ["gliodeploy-client", *argv[3:]]
    return argv


def _gliodeploy(*args: str) -> list[str]:
    return [sys.executable, "-m", "gliodeploy.cli", *args]


def _client(*args: str) -> list[str]:
    return [sys.executable, "-m", "gliodeploy.client.cli", *args]


def _default_config() -> Path:
    return _REPO_ROOT / "training" / "demo.toml"


def verify_before_serving(repo: Path) -> dict[str, list[int]]:
    """``gliodeploy verify REPO`` (printed as a user would type it): the demo serves only a repository
    whose every file matches its checksums and holds nothing export did not write (ModelError otherwise)."""
    from gliodeploy.export.modelcard import verify_repository

    typer.echo(f"$ gliodeploy verify {shlex.quote(str(repo))}")
    found = verify_repository(repo)
    for model, versions in found.items():
        typer.echo(f"    {model}: versions {', '.join(map(str, versions))} OK")
    return found


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _delta(comparison: dict) -> str:
    """``+0.012 [-0.020, +0.041], p = 0.45``: a paired bootstrap AUC difference from metrics.json."""
    from gliodeploy.evaluation.metrics import Estimate

    return f"{Estimate(**comparison['delta']).format_signed()}, p = {comparison['p_value']:.2f}"


def _auc_lines(metrics_path: Path) -> list[str]:
    """Headline AUCs (with 95 % CIs) of the CNN ensemble and the TBR baseline from metrics.json."""
    try:
        data = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return [f"(no metrics at {metrics_path})"]

    def auc(split: dict | None) -> str:
        if not split:
            return "n/a"
        roc = next(iter(split["thresholds"].values()))["metrics"]["roc_auc"]
        return f"{roc['value']:.3f} [{roc['low']:.3f}-{roc['high']:.3f}] (n={split['n']})"

    lines = []
    for run in data.get("runs", []):
        lines.append(f"CNN ensemble '{run['name']}': OOF validation AUC {auc(run.get('validation'))}")
        lines.append(f"CNN ensemble '{run['name']}': external test AUC  {auc(run.get('test'))}")
        loc = run.get("localisation")
        if loc and loc.get("n_with_truth"):
            rate = loc["localisation_rate"]
            lines.append(
                f"CNN ensemble '{run['name']}': Grad-CAM peak <= {loc['threshold_mm']:g} mm from the true "
                f"lesion in {loc['n_localised']}/{loc['n_with_truth']} {loc['population']} "
                f"({rate['value']:.0%}, 95 % CI {rate['low']:.0%}-{rate['high']:.0%}); median attention "
                f"inside the brain {loc['median_attention_inside_brain']:.0%}"
            )
        prior = run.get("built_in_prior")
        if prior:
            parts = [
                f"{where} {c['auc_a']:.3f} vs {c['auc_b']:.3f} ({_delta(c)})"
                for where, c in (("OOF", prior["validation"]), ("external", prior.get("test")))
                if c
            ]
            lines.append(f"CNN ensemble '{run['name']}' trained vs untrained prior: " + "; ".join(parts))
        versus = run.get("test_auc_vs_baseline")
        if versus:
            lines.append(f"CNN ensemble '{run['name']}' - baseline, external test AUC: {_delta(versus)}")
    base = data.get("baseline")
    if base:
        lines.append(f"{base['name']}: training-site AUC {auc(base.get('validation'))}")
        lines.append(f"{base['name']}: external test AUC {auc(base.get('test'))}")
        miss = base.get("hotspot_miss")
        if miss:
            lines.append(
                f"{base['name']}: automatic hotspot > {miss['threshold_mm']:g} mm from the true lesion in "
                f"{miss['n_miss']} of {miss['n']} scans"
            )
    return lines


def _decision_lines(predictions: Path, test_rows: list[dict[str, str]], metrics_path: Path) -> list[str]:
    """What the served model decided on the external scans, at the operating point it shipped with.

    Read from the client's own JSON output (so it is what a hospital would have received), beside the
    operating point's expected sensitivity/specificity and the model's own warnings from the report.
    """
    try:
        doc = json.loads(predictions.read_text())
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return [f"(no client predictions at {predictions})"]
    from gliodeploy.contract import describe_operating_point

    lines = []
    op = (doc.get("model") or {}).get("operating_point")
    if op:
        lines.append(f"served operating point: {describe_operating_point(op)}")
    label_of = {Path(r["image"]).name: int(r["label"]) for r in test_rows}
    ok = [r for r in doc.get("results", []) if r.get("ok")]
    calls = [(int(r["label"]), label_of.get(Path(r["source"]).name)) for r in ok]
    pos = [c for c, y in calls if y == 1]
    neg = [c for c, y in calls if y == 0]
    n_rec = sum(c for c, _ in calls)
    lines.append(
        f"client decisions on {len(calls)} external scans: {n_rec} recurrence, {len(calls) - n_rec} "
        f"treatment-related change; sensitivity {sum(pos)}/{len(pos)}, specificity "
        f"{len(neg) - sum(neg)}/{len(neg)}"
    )
    probs = sorted(float(r["probability"]) for r in ok)
    if probs:
        q1, q3 = probs[len(probs) // 4], probs[(3 * len(probs)) // 4]
        lines.append(
            f"external probabilities: {probs[0]:.2f}-{probs[-1]:.2f}, interquartile {q1:.2f}-{q3:.2f}"
        )
    for run in metrics.get("runs", []):
        lines += [f"warning ({run['name']}): {note}" for note in run.get("diagnosis", [])]
    return lines


def demo(
    out: Path = typer.Option(Path("demo_output"), "--out", "-o", help="Folder for every artefact."),
    n: int = typer.Option(160, "--n", min=30, help="Synthetic subjects (both sites)."),
    test_fraction: float = typer.Option(
        0.375,
        "--test-fraction",
        help="Share of subjects at the external test site (default: 100 training + 60 external scans, "
        "so the external CI means something).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic cohort and of training."),
    size: str = typer.Option("small", "--size", help="Synthetic voxel size: tiny, small (4 mm) or full."),
    config: Path = typer.Option(
        None, "--config", help="Experiment TOML (default: training/demo.toml, a small CNN on a 4 mm grid)."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Override the config's number of epochs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier demo in --out first."),
) -> None:
    """Run the whole pipeline on a synthetic FDOPA PET cohort, end to end, on this machine.

    Generates a cohort (training site + external site), trains the cross-validated ensemble, writes the
    evaluation report (CNN ensemble vs the clinicians' TBR baseline, with 95 % CIs), explains one scan
    with Grad-CAM, exports the ensemble to a Triton model repository, starts the bundled Triton server on
    127.0.0.1, predicts the external-site scans with gliodeploy-client, prints where everything is, and
    stops the server. About 10-30 minutes on a 2-core CPU.
    """
    from gliodeploy.serving.server import TritonServer

    config = config or _default_config()
    if not config.is_file():
        raise ConfigError(f"experiment config not found: {config}")
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty: pass --overwrite to replace the earlier demo, or --out")
        if not (out / _MARKER).is_file():
            # --overwrite deletes a folder only if an earlier demo made it: never someone's data.
            raise ConfigError(
                f"{out} is not empty and was not written by gliodeploy demo: choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text(
        "written by gliodeploy demo; `gliodeploy demo --overwrite` may delete this folder\n"
    )

    cohort, run, repo = out / "cohort", out / "run", out / "model_repository"
    report_dir, explain_dir = run / "evaluation", out / "explain"
    predictions = out / "predictions_external.json"
    steps = _Steps(total=7)
    started = time.perf_counter()

    steps.run(
        "Generate a synthetic FDOPA PET cohort (training site + external site)",
        _gliodeploy(
            "synth",
            *("--out", str(cohort), "--n", str(n), "--seed", str(seed), "--size", size),
            *("--test-fraction", str(test_fraction)),
        ),
    )
    manifest = cohort / "manifest.csv"
    train_args = ["train", str(config), "--manifest", str(manifest), "--out", str(run), "--device", "auto"]
    if epochs:
        train_args += ["--epochs", str(epochs)]
    steps.run("Train the cross-validated CNN ensemble", _gliodeploy(*train_args))
    steps.run(
        "Evaluate: out-of-fold + external test, CNN vs TBR baseline, bootstrap CIs",
        _gliodeploy("evaluate", str(run), "--manifest", str(manifest), "--out", str(report_dir)),
    )
    rows = _read_manifest(manifest)
    test_rows = [r for r in rows if r["split"] == "test"]
    if not test_rows:
        raise ConfigError(f"the synthetic cohort has no external test scans ({manifest}); raise --n")
    positives = [r for r in test_rows if r["label"] == "1"] or test_rows
    explained = (manifest.parent / positives[0]["image"]).resolve()
    steps.run(
        f"Explain one external scan ({positives[0]['subject']}) with Grad-CAM (ensemble)",
        _gliodeploy(
            "explain",
            *(str(run), str(explained), "--ensemble", "--out", str(explain_dir)),
            *("--manifest", str(manifest)),  # synthetic truth: the peak-to-lesion distance
        ),
    )
    steps.run(
        "Export the fold ensemble to a Triton model repository",
        _gliodeploy("export", str(run), "--out", str(repo)),
    )

    typer.secho(f"\n[6/{steps.total}] Start the Triton server (bundled binary, 127.0.0.1 only)", bold=True)
    verify_before_serving(repo)
    t0 = time.perf_counter()
    scans = [str((manifest.parent / r["image"]).resolve()) for r in test_rows]
    with TritonServer(repo, log_file=out / "tritonserver.log") as server:
        ready_s = time.perf_counter() - t0
        steps.timed("Start the Triton server", ready_s)
        typer.echo(f"    ready at http://{server.http_url} (gRPC {server.grpc_url}) in {ready_s:.1f} s")
        steps.run(
            f"Predict the {len(scans)} external-site scans with gliodeploy-client",
            _client("predict", *scans, "--url", server.http_url, "--json", "--output", str(predictions)),
        )
        subprocess.call(_client("predict", scans[0], "--url", server.http_url))
    typer.echo("    Triton server stopped")

    total = time.perf_counter() - started
    typer.secho("\nDemo finished", bold=True, fg="green")
    for title, seconds in steps.timings:
        typer.echo(f"  {seconds:7.1f} s  {title}")
    typer.echo(f"  {total:7.1f} s  total")
    for line in _auc_lines(report_dir / "metrics.json"):
        typer.echo(f"  {line}")
    for line in _decision_lines(predictions, test_rows, report_dir / "metrics.json"):
        typer.echo(f"  {line}")
    typer.secho("\nArtefacts", bold=True)
    for label, path in [
        ("synthetic cohort + manifest", manifest),
        ("training run (folds, logs, OOF predictions)", run),
        ("evaluation report (open in a browser)", report_dir / "report.html"),
        ("Grad-CAM maps (NIfTI in the scan's space + PNG)", explain_dir),
        ("Triton model repository", repo),
        ("client predictions (JSON)", predictions),
        ("Triton server log", out / "tritonserver.log"),
    ]:
        typer.echo(f"  {label:50s} {path}")
