"""``gliodeploy synth``: write a synthetic 18F-FDOPA PET cohort (the default data of demo and tests)."""

from __future__ import annotations

from pathlib import Path

import typer

from gliodeploy.synth.plan import STUDY_TEST_FRACTION


def synth(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (created; must be empty unless --overwrite)."
    ),
    n: int = typer.Option(196, "--n", help="Number of subjects (both sites; the study had 164 + 32)."),
    seed: int = typer.Option(
        0, "--seed", help="Cohort seed: same seed and options give byte-identical images."
    ),
    size: str = typer.Option(
        "full",
        "--size",
        help="Voxel size: full (scanner-native ~2 mm), small (~4 mm) or tiny (~8 mm, for tests).",
    ),
    test_fraction: float = typer.Option(
        STUDY_TEST_FRACTION,
        "--test-fraction",
        help="Share of subjects at the external test site (split=test).",
    ),
    dicom_fraction: float = typer.Option(
        0.0, "--dicom-fraction", help="Share of subjects written as DICOM series instead of NIfTI."
    ),
    label_noise: float = typer.Option(
        0.05,
        "--label-noise",
        help="Share of recorded labels flipped at each site (true labels stay in the manifest).",
    ),
    workers: int = typer.Option(1, "--workers", help="Processes to use."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic cohort already in --out."),
) -> None:
    """Generate a synthetic static FDOPA PET cohort: NIfTI in Bq/mL, BIDS-PET sidecars, manifest.csv.

    Training site Nancy (Siemens Biograph mCT, Philips Vereos; ~72 % recurrence; split=train).

    External site Paris (GE Discovery MI, Siemens Biograph Vision; ~81 % recurrence; split=test).

    Only the lesion carries the label, and only as tendencies: uptake, size, edge, texture, necrosis and
    number of foci are drawn from overlapping class-conditional distributions (gliodeploy.synth.lesion).
    manifest.csv also holds the ground truth, cohort_summary.json the cohort's separability.

    Prints subjects per site/scanner/label, the ROC AUC of the ground-truth TBRmax and of the best
    single shape feature (how hard the cohort is).
    """
    from rich.console import Console
    from rich.table import Table

    from gliodeploy.synth.cohort import SUMMARY_NAME, generate_cohort
    from gliodeploy.synth.summary import summarize_cohort

    manifest = generate_cohort(
        out,
        n=n,
        seed=seed,
        size=size,
        test_fraction=test_fraction,
        dicom_fraction=dicom_fraction,
        label_noise=label_noise,
        workers=workers,
        progress=True,
        overwrite=overwrite,
    )
    summary = summarize_cohort(manifest)
    table = Table(title=f"synthetic cohort: {summary.n} subjects ({size})")
    for column in ("site", "scanner", "recurrence", "TRC"):
        table.add_column(column, justify="left" if column in ("site", "scanner") else "right")
    pairs = sorted({(site, scanner) for site, scanner, _ in summary.counts})
    for site, scanner in pairs:
        rec = summary.counts.get((site, scanner, 1), 0)
        trc = summary.counts.get((site, scanner, 0), 0)
        table.add_row(site, scanner, str(rec), str(trc))
    console = Console()
    console.print(table)

    def fmt(auc: float | None) -> str:
        return "n/a (one class only)" if auc is None else f"{auc:.3f}"

    lines = [f"labels flipped by label noise: {summary.flipped}"]
    for name, group in (("all subjects", summary.overall), ("training site", summary.training)):
        best = group.best_shape_feature
        shape = "n/a" if best is None else f"{best[0]} AUC {best[1]:.3f}"
        lines.append(
            f"{name} (n={group.n}): ground-truth TBRmax ROC AUC {fmt(group.tbr_auc_observed)} "
            f"(recorded labels; {fmt(group.tbr_auc_true)} true labels); best single shape feature: {shape}"
        )
    if summary.overall.shape_auc_observed:
        lines.append(
            "shape-feature AUCs, all subjects, recorded labels, max(AUC, 1-AUC): "
            + ", ".join(f"{k} {fmt(v)}" for k, v in summary.overall.shape_auc_observed.items())
        )
    lines.append(f"summary: {manifest.parent / SUMMARY_NAME}")
    lines.append(f"manifest: {manifest}")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
