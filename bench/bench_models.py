"""Per-architecture forward (batch 1) and Adam training step (batch 2) at 128 x 128 x 82, and the
batchgeneratorsv2 augmentation throughput next to a training step: can augmentation starve training?

    .venv/bin/python bench/run_benchmarks.py --only models [--quick]
"""

from __future__ import annotations

import time

from common import BenchResult, Table, fmt, random_suv, stats_ms, time_calls

NAME = "models"
STUDY_SHAPE = (128, 128, 82)


def _model_rows(quick: bool, shape: tuple[int, int, int]) -> tuple[Table, dict, dict[str, float]]:
    import torch

    from gliodeploy.models import MODEL_NAMES, build_model
    from gliodeploy.models.registry import count_parameters
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = PreprocessConfig.study(shape=shape)
    fwd_reps, train_reps = (1, 1) if quick else (2, 1)
    table = Table(
        f"Per model at {'x'.join(map(str, shape))}: forward batch 1 (inference mode) and one training step "
        "batch 2 (BCE-with-logits + backward + Adam), seconds",
        ["model", "parameters", "forward p50", "forward min", "train step p50", "train step min"],
    )
    table.notes.append(
        f"{fwd_reps} timed forward(s) and {train_reps} timed training step(s) per model, after one "
        "warm-up each."
    )
    raw: dict = {}
    step_s: dict[str, float] = {}
    x1 = torch.from_numpy(random_suv(shape))
    x2 = torch.from_numpy(random_suv(shape, seed=1).repeat(2, axis=0))
    y2 = torch.tensor([[1.0], [0.0]])
    for name in MODEL_NAMES:
        torch.manual_seed(0)
        model = build_model(name, preprocessing=cfg).eval()
        with torch.inference_mode():
            fwd = stats_ms(time_calls(lambda m=model: m(x1), fwd_reps))
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(m=model, o=opt, loss_fn=loss_fn) -> None:  # noqa: ANN001 - bound defaults
            o.zero_grad(set_to_none=True)
            loss_fn(m(x2), y2).backward()
            o.step()

        train = stats_ms(time_calls(step, train_reps))
        step_s[name] = train["p50_ms"] / 1000
        raw[name] = {"parameters": count_parameters(model), "forward": fwd, "train_step": train}
        table.add(
            name,
            f"{count_parameters(model):,}",
            fmt(fwd["p50_ms"] / 1000, 2),
            fmt(fwd["min_ms"] / 1000, 2),
            fmt(train["p50_ms"] / 1000, 2),
            fmt(train["min_ms"] / 1000, 2),
        )
        print(f"  {name}: forward {fwd['p50_ms']:.0f} ms, train step {train['p50_ms']:.0f} ms", flush=True)
        del model, opt
    return table, raw, step_s


def _augmentation(quick: bool, shape: tuple[int, int, int]) -> dict:
    """Volumes/s of the training augmentation (one process, nnU-Net probabilities) on a masked volume."""
    import numpy as np
    import torch

    from gliodeploy.data.augmentation import Augmenter

    aug = Augmenter(shape)
    rng = np.random.default_rng(0)
    vol = rng.gamma(2.0, 0.6, size=(1, *shape)).astype(np.float32)
    # A brain-like support: values only inside an ellipsoid, zero outside (what the Dataset feeds).
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    vol[0][(grid**2).sum(0) > 0.8] = 0.0
    image = torch.from_numpy(vol)
    n = 8 if quick else 40
    torch.manual_seed(0)
    np.random.seed(0)  # batchgeneratorsv2 draws from the global generators
    aug(image)
    t0 = time.perf_counter()
    for _ in range(n):
        aug(image)
    wall = time.perf_counter() - t0
    threads = torch.get_num_threads()
    return {"volumes": n, "seconds": wall, "volumes_per_s": n / wall, "torch_threads": threads}


def run(quick: bool) -> BenchResult:
    """Forward/training-step time per model and augmentation throughput at the study grid."""
    import os

    result = BenchResult(NAME, "Models: forward, training step and augmentation per architecture")
    # --quick runs the same code on the reduced 64x64x41 grid (a smoke run, not figures to quote).
    shape = (64, 64, 41) if quick else STUDY_SHAPE
    table, raw, step_s = _model_rows(quick, shape)
    result.tables.append(table)
    result.raw["models"] = raw

    aug = _augmentation(quick, shape)
    result.raw["augmentation"] = aug
    per_batch = 2 / aug["volumes_per_s"]  # one training batch = 2 augmented volumes
    cores = len(os.sched_getaffinity(0))
    at = Table(
        "Augmentation (gliodeploy.data.augmentation.Augmenter, batchgeneratorsv2, nnU-Net probabilities) "
        "vs a batch-2 training step",
        ["model", "train step s", "augment 2 volumes s (1 worker)", "workers to keep up", "bottleneck?"],
    )
    at.notes.append(
        f"Augmentation measured in one process: {aug['volumes_per_s']:.1f} volumes/s over {aug['volumes']} "
        f"volumes ({aug['torch_threads']} torch threads). N workers give at most N x that while cores are "
        f"free; this machine has {cores} cores shared by the workers and the training step itself, so "
        "the 'workers needed' column assumes the workers get their own cores (true on a GPU box)."
    )
    for name, s in step_s.items():
        need = per_batch / s
        at.add(
            name,
            fmt(s, 2),
            fmt(per_batch, 3),
            fmt(need, 2),
            "yes, with 1 worker" if need > 1 else "no (1 worker keeps up)",
        )
    result.tables.append(at)
    fastest = min(step_s, key=step_s.get)
    result.verdicts.append(
        f"Augmentation runs {aug['volumes_per_s']:.1f} volumes/s per worker, i.e. {per_batch:.2f} s per "
        f"batch of 2; the fastest CPU training step ({fastest}, {step_s[fastest]:.2f} s) "
        + (
            "is shorter, so on CPU one worker can starve it."
            if per_batch > step_s[fastest]
            else "is longer, so on CPU one worker always keeps up."
        )
        + " On a GPU (steps of tens of ms) augmentation is the bottleneck unless the workers scale: at "
        f"{aug['volumes_per_s']:.1f} vol/s per worker, a 50 ms GPU step at batch 2 needs "
        f"~{per_batch / 0.05:.0f} workers."
    )
    return result
