"""Run the gliodeploy benchmark suite and write BENCHMARKS.md (``make bench``).

    .venv/bin/python bench/run_benchmarks.py                 # everything (~15-20 min on 2 cores)
    .venv/bin/python bench/run_benchmarks.py --quick         # few repeats: a smoke run
    .venv/bin/python bench/run_benchmarks.py --only ensemble --only serving

Each benchmark's result is saved to ``bench/results/<name>.json`` with the machine, the command,
the date and the load average before/after it; BENCHMARKS.md is then rendered from every saved
result, so ``--only`` refreshes one section and keeps the others. ``--quick`` results go to
``bench/results/quick/`` and never overwrite the full run's figures (nor BENCHMARKS.md, unless
``--markdown`` names a file).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench modules import `common`

from common import RESULTS_DIR, ROOT, BenchResult, Stamp, loadavg  # noqa: E402

from gliodeploy.utils.atomic import atomic_write  # noqa: E402

#: Benchmark name -> module in bench/, in the order they run and appear in BENCHMARKS.md.
BENCHMARKS: dict[str, str] = {
    "preprocessing": "bench_preprocessing",
    "models": "bench_models",
    "ensemble": "bench_ensemble",
    "cpu_engines": "bench_cpu_engines",
    "cpu_guard": "bench_cpu_guard",
    "serving": "bench_serving",
    "client": "bench_client",
    "compression": "bench_compression",
    "predict": "bench_predict",
}


def run_one(name: str, quick: bool, command: str) -> dict:
    """Run benchmark ``name`` and return its result with machine, command, date and load."""
    module = importlib.import_module(BENCHMARKS[name])
    stamp = Stamp.start()
    result: BenchResult = module.run(quick)
    return stamp.document(result, command=command, quick=quick)


def save_result(doc: dict, out_dir: Path) -> str:
    """Write a stand-alone benchmark's ``<name>.json`` and ``.md`` to ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_section(doc)
    atomic_write(out_dir / f"{doc['name']}.json", json.dumps(doc, indent=2) + "\n")
    atomic_write(out_dir / f"{doc['name']}.md", markdown)
    return markdown


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|")


def render_section(doc: dict) -> str:
    """One benchmark's Markdown section: header facts, tables, verdicts."""
    m = doc["machine"]
    lines = [f"## {doc['title']}", ""]
    lines.append(
        f"*{doc['date']}* · `{doc['command']}`{' (quick)' if doc.get('quick') else ''} · "
        f"{doc['duration_s']:.0f} s  \n"
        f"{m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB RAM · torch {m['torch']} "
        f"({m['torch_threads']} intra-op threads) · onnxruntime {m['onnxruntime']} "
        f"({m['ort_intra_op_threads']}) · numpy {m['numpy']}  \n"
        f"load average (1/5/15 min) before {' / '.join(f'{v:.2f}' for v in doc['loadavg_before'])}, "
        f"after {' / '.join(f'{v:.2f}' for v in doc['loadavg_after'])}"
    )
    lines.append("")
    for t in doc["tables"]:
        lines.append(f"**{t['caption']}**")
        lines.append("")
        lines.append("| " + " | ".join(t["columns"]) + " |")
        lines.append("|" + "|".join("---" for _ in t["columns"]) + "|")
        for row in t["rows"]:
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
        for note in t["notes"]:
            lines.append(f"- {note}")
        if t["notes"]:
            lines.append("")
    if doc["verdicts"]:
        lines.append("**Verdict**")
        lines.append("")
        lines += [f"- {v}" for v in doc["verdicts"]]
        lines.append("")
    return "\n".join(lines)


HEADER = """# Benchmarks

Measured by `make bench` (`.venv/bin/python bench/run_benchmarks.py`); every figure below comes from
the JSON files in [bench/results/](bench/results/) written by that run — nothing is typed in. Each
section names the machine, the exact command, the date and the load average before/after: this is a
shared 2-core machine, and a load above 2 means other processes were competing for the cores, which
inflates latencies (p99 most). Models carry fixed-seed random weights: latency does not depend on
the weights. See [bench/README.md](bench/README.md) for what each benchmark does.
"""


def learning_curve_summary(results_dir: Path) -> str:
    """One table per cohort: every (variant, cohort size) measured by bench_learning.py, best last run."""
    points: dict[str, dict[tuple[str, int], tuple[dict, str]]] = {}
    for path in sorted(results_dir.glob("learning_*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        info = (doc.get("raw") or {}).get("cohort", {})
        generator = ((info.get("summary") or {}).get("generator") or {}).get("Description")
        cohort = f"gliodeploy synth {generator}" if generator else info.get("manifest", "?")
        for run in (doc.get("raw") or {}).get("runs", []):
            points.setdefault(cohort, {})[(run["variant"], int(run["n_train"]))] = (run, path.stem)
    out = ["## Learning curve: OOF AUC against cohort size, beside the ceiling\n"]
    for cohort, runs in points.items():
        out.append(f"Cohort `{cohort}` (each row's command is in the section named in 'from').\n")
        out.append("| variant | n train | OOF AUC [95 % CI] | TBRmax AUC (ceiling) | gap [95 % CI] | from |")
        out.append("|---|---|---|---|---|---|")
        for (variant, n), (run, stem) in sorted(runs.items()):
            o = run["oof"]
            auc, gap, ceiling = o["oof_auc"], o["auc_minus_tbr"], o["tbr_max_auc"]["value"]
            out.append(
                f"| {variant} | {n} | {auc['value']:.3f} [{auc['low']:.3f}-{auc['high']:.3f}] "
                f"| {ceiling:.3f} | {gap['value']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}] | {stem} |"
            )
        out.append("")
    return "\n".join(out)


GPU_NOT_RUN = """## GPU check: not run

`bash bench/gpu_check.sh` (ONNX Runtime CUDA / TensorRT at batch 1 / 8 / 32 for the 10-fold CNN3D
ensemble at 128x128x82, TensorRT FP16 against FP32 on reference cases, a bf16 AMP training step per
architecture; under 10 minutes) has **not been run**: no GPU has been available to this project's
sessions yet. Its CPU smoke run is part of the tests (`tests/test_gpu_check.py`). The GPU goal
(ensemble p50 below 20 ms at batch 1 end to end through Triton on an H100/H200-class GPU) is therefore
unverified. After a run, copy its `gpu_check.json` to `bench/results/` and re-render.
"""


def gpu_section(results_dir: Path) -> str:
    """The GPU check's section (``bench/gpu_check.sh``), or a statement that it has not been run."""
    path = results_dir / "gpu_check.json"
    if not path.is_file():
        return GPU_NOT_RUN
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("quick"):  # a CPU smoke run proves the script works, not the GPU figures
        return GPU_NOT_RUN
    return render_section(doc)


def render(results_dir: Path) -> str:
    """BENCHMARKS.md from every saved result, in suite order."""
    parts = [HEADER]
    for name in BENCHMARKS:
        path = results_dir / f"{name}.json"
        if path.is_file():
            parts.append(render_section(json.loads(path.read_text(encoding="utf-8"))))
        else:
            rerun = f".venv/bin/python bench/run_benchmarks.py --only {name}"
            parts.append(f"## {name}\n\nNot run yet: `{rerun}`\n")
    parts.append(gpu_section(results_dir))
    if (results_dir / "distill.json").is_file():  # bench/bench_distill.py: needs a trained run
        parts.append(render_section(json.loads((results_dir / "distill.json").read_text(encoding="utf-8"))))
    learning = sorted(results_dir.glob("learning_*.md"))
    if learning:  # bench/bench_learning.py: trains models (an hour or more), run on its own
        parts.append(
            "# Learning: honest out-of-fold AUC against the information ceiling\n\n"
            "Written by `bench/bench_learning.py` (not part of `make bench`: it trains models). Each table "
            "states its command, machine, date and load. OOF predictions are honest (each fold's final "
            "epoch); the ceiling is the ground-truth TBRmax AUC of the same subjects on the same recorded "
            "labels.\n"
        )
        parts.append(learning_curve_summary(results_dir))
        # variants first, then the learning curve points, then the early probes
        order = {"variants": 0, "prior": 1, "curve": 2, "probe": 3}
        learning.sort(key=lambda p: (order.get(p.stem.split("_")[1], 3), p.stem))
        for path in learning:
            text = path.read_text(encoding="utf-8").strip()
            parts.append(f"### {path.stem}\n\n" + text.replace("\n## ", "\n#### ").removeprefix("## ") + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the number of benchmarks that failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repeats and small settings (smoke run)")
    ap.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark")
    ap.add_argument("--render", action="store_true", help="only re-render BENCHMARKS.md from saved results")
    ap.add_argument("--markdown", type=Path, help="write the report here (default: BENCHMARKS.md, full runs)")
    args = ap.parse_args(argv)
    command = " ".join([".venv/bin/python bench/run_benchmarks.py", *map(shlex.quote, sys.argv[1:])])
    results_dir = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in [] if args.render else args.only or list(BENCHMARKS):
        print(f"== {name} (load {loadavg()})", flush=True)
        try:
            doc = run_one(name, args.quick, command)
        except Exception:  # one broken benchmark must not cost the others' figures
            traceback.print_exc()
            failed += 1
            continue
        atomic_write(results_dir / f"{name}.json", json.dumps(doc, indent=2) + "\n")
        print(render_section(doc), flush=True)
    markdown = args.markdown or (None if args.quick else ROOT / "BENCHMARKS.md")
    if markdown is not None:
        atomic_write(markdown, render(results_dir))
        print(f"wrote {markdown}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
