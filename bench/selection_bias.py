"""How much choosing each fold's epoch on its own validation patients inflates the pooled OOF AUC.

A numpy simulation of the study's protocol with labels that carry no signal at all: 164 patients
(72 % recurrence), 10 stratified folds, 150 epochs. A fold model's validation logits drift from epoch
to epoch (an AR(1) walk per patient: slowly changing, as weights do) and are pure noise with respect
to the labels. "study" keeps the epoch with the lowest validation BCE on the fold itself; "final"
keeps the last epoch. The pooled OOF AUC of "final" is centred on 0.5; the gap is the selection bias.

    python bench/selection_bias.py [--runs 200]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold


def simulate(rng: np.random.Generator, n: int = 164, folds: int = 10, epochs: int = 150, rho: float = 0.9):
    y = (rng.random(n) < 0.72).astype(int)
    oof_final, oof_study = np.empty(n), np.empty(n)
    for _, val in StratifiedKFold(folds, shuffle=True, random_state=int(rng.integers(1 << 31))).split(y, y):
        z = rng.normal(0, 1, len(val))
        best, best_loss = None, np.inf
        prior = np.log(0.72 / 0.28)
        for _ in range(epochs):
            z = rho * z + np.sqrt(1 - rho**2) * rng.normal(0, 1, len(val))
            logit = prior + 0.8 * z
            p = 1 / (1 + np.exp(-logit))
            loss = -np.mean(y[val] * np.log(p) + (1 - y[val]) * np.log(1 - p))
            if loss < best_loss:
                best, best_loss = p, loss
        oof_final[val], oof_study[val] = p, best
    return roc_auc_score(y, oof_final), roc_auc_score(y, oof_study)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    res = np.array([simulate(rng) for _ in range(args.runs)])
    for name, col in (("final epoch (honest)", 0), ("best epoch on the fold (study)", 1)):
        q = np.percentile(res[:, col], [5, 50, 95])
        print(f"{name:32s} pooled OOF AUC median {q[1]:.3f}  (5-95 %: {q[0]:.3f}-{q[2]:.3f}), n={args.runs}")


if __name__ == "__main__":
    main()
