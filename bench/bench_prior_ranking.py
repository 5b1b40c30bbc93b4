"""How well LesionNet's built-in prior alone ranks a cohort's subjects (issue #11): zero-parameter variants.

    .venv/bin/python bench/bench_prior_ranking.py --manifest COHORT/manifest.csv --name NAME

For each variant of the prior (untrained ``lesionnet`` with the given options, the demo's grid and
"tbr" input) and for the TBRmax baseline, per site: the AUC on the recorded labels and the Spearman
correlation with the generator's true TBRmax (a low-noise check beside the AUC on noisy labels), with the
true TBRmax's own AUC (the ceiling). No training: this is how the demo's prior was chosen, on a cohort
other than the demo's. Writes ``bench/results/learning_prior_ranking_NAME.{json,md}`` (rendered into
BENCHMARKS.md's "Learning" part).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, BenchResult, Stamp, Table  # noqa: E402

_RATIO = {
    "asymmetry_mode": "ratio",
    "asymmetry_tolerance_mm": 8.0,
    "asymmetry_smoothing_mm": 0.0,
    "asymmetry_peak_smoothing_mm": 0.0,
}
#: name -> (LesionNet options, what it is)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "difference_peak": (
        {"asymmetry_peak_smoothing_mm": 0.0},
        "difference, 12 mm tolerance, mirror side smoothed +-4 mm (demo until session 4)",
    ),
    "ratio": (_RATIO, "ratio, 8 mm tolerance, floor 0.25, nothing smoothed (demo in session 4)"),
    "ratio_floor": ({**_RATIO, "asymmetry_ratio_floor": 0.3}, "ratio, floor 0.3"),
    "ratio_pv": (
        {**_RATIO, "asymmetry_ratio_floor": 0.3, "asymmetry_contrast_gamma": 0.5},
        "ratio, floor 0.3, partial-volume term gamma 0.5 (+-4 mm)",
    ),
    "ratio_pv_msp": (
        {
            **_RATIO,
            "asymmetry_ratio_floor": 0.3,
            "asymmetry_contrast_gamma": 0.5,
            "asymmetry_mirror": "midsagittal",
        },
        "the same, mirrored about the estimated mid-sagittal plane (the demo's)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    import torch
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from gliodeploy.data.manifest import read_manifest
    from gliodeploy.evaluation.inference import baseline_parameters, load_volumes
    from gliodeploy.models.registry import build_model
    from gliodeploy.training.config import load_experiment

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True, help="a synthetic cohort (it has tbr_max_true)")
    ap.add_argument("--name", required=True, help="result name: bench/results/learning_prior_ranking_NAME")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)

    stamp = Stamp.start()
    cfg = load_experiment(Path(__file__).resolve().parent.parent / "training" / "demo.toml").preprocessing
    rows = read_manifest(args.manifest).rows
    with open(args.manifest, newline="", encoding="utf-8") as fh:
        truth = {r["subject"]: float(r["tbr_max_true"]) for r in csv.DictReader(fh)}
    volumes = load_volumes(rows, cfg, args.manifest.parent / "cache")
    base = baseline_parameters(rows, volumes, cfg.spacing)
    subjects = [r.subject for r in rows]
    labels = np.array([r.label for r in rows])
    true = np.array([truth[s] for s in subjects])
    sites = {"training site (OOF patients)": np.array([r.split != "test" for r in rows])}
    sites["external site"] = ~sites["training site (OOF patients)"]
    scores: dict[str, np.ndarray] = {"true TBRmax (ceiling)": true}
    scores["TBRmax baseline"] = np.array([base[s].tbr_max for s in subjects])
    torch.manual_seed(0)
    for name in args.variants:
        model = build_model("lesionnet", preprocessing=cfg, **VARIANTS[name][0]).eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(subjects), 32):
                batch = np.stack([volumes[s].array for s in subjects[i : i + 32]])[:, None]
                out.append(model(torch.from_numpy(batch))[:, 0].numpy())
        scores[f"prior `{name}`"] = np.concatenate(out)

    columns = ["score", "what"]
    for site, mask in sites.items():
        columns += [f"{site}: AUC (n={int(mask.sum())})", f"{site}: Spearman with true TBRmax"]
    table = Table(f"Untrained LesionNet priors vs the TBRmax baseline; cohort `{args.manifest}`", columns)
    raw: dict[str, Any] = {}
    for label, score in scores.items():
        key = label.split("`")[1] if "`" in label else label
        what = VARIANTS[key][1] if key in VARIANTS else ""
        cells: list[Any] = [label, what]
        raw[key] = {}
        for site, mask in sites.items():
            auc = float(roc_auc_score(labels[mask], score[mask]))
            rho = float(spearmanr(score[mask], true[mask])[0])
            cells += [f"{auc:.3f}", f"{rho:.3f}"]
            raw[key][site] = {"auc": auc, "spearman": rho}
        table.add(*cells)
    table.notes.append(
        "zero-parameter scores: the untrained model's logit is gain x max(prior) + bias, so its ranking is "
        "the prior's; the true TBRmax is the generator's (not measurable in practice)"
    )
    result = BenchResult(
        f"learning_prior_ranking_{args.name}", "How well the built-in prior alone ranks", [table]
    )
    result.raw = raw
    command = " ".join([".venv/bin/python bench/bench_prior_ranking.py", *(argv or sys.argv[1:])])
    from run_benchmarks import save_result

    print(save_result(stamp.document(result, command=command, quick=False), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
