"""Which Optuna sampler finds a planted learning-rate optimum in few trials (issue 26)?

A 1-D noisy objective in x = log2(lr) over the demo's range (lr 1e-3..2, 11 octaves): the optimum
x0 drawn uniformly inside the range, ``loss = c·(x - x0)² + noise`` below a cliff at ``x0 + margin``,
``+inf`` above it (a diverged trial, as ``tune_base.objective_value`` tells Optuna). For N trials per
study, each sampler runs the same replicates (same x0, same noise), ask/tell in-process, one trial at a
time (``--batch 2``: two asked before either is told, as two concurrent Ray trials); a replicate is a hit
when its best trial lies within ``--tol`` octaves (default 1/4) of x0. Prints the hit fractions::

    python benchmarks/base_sampler.py [--replicates 100] [--trials 6 10 20] [--batch 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.studies.tune_base import base_sampler  # noqa: E402

LR_RANGE = (1.0e-3, 2.0)
SPACE = [{"name": "lr", "type": "float", "low": LR_RANGE[0], "high": LR_RANGE[1], "log": True}]


def planted(
    seed: int, curvature: float = 0.05, noise: float = 0.002, margin: float = 0.75
) -> tuple[float, Callable[[float], float]]:
    """The optimum x0 (log2 lr) of replicate ``seed`` and its noisy loss of an lr (inf past the cliff)."""
    rng = np.random.default_rng([26, seed])
    lo, hi = math.log2(LR_RANGE[0]), math.log2(LR_RANGE[1])
    x0 = float(rng.uniform(lo, hi))

    def loss(lr: float) -> float:
        x = math.log2(lr)
        if x > x0 + margin:
            return math.inf
        return 0.3 + curvature * (x - x0) ** 2 + noise * float(rng.standard_normal())

    return x0, loss


def best_x(sampler: optuna.samplers.BaseSampler, loss: Callable[[float], float], n: int, batch: int = 1) -> float:
    """log2 of the best lr ``sampler`` finds in ``n`` trials of ``loss`` (``batch`` asked before any is told)."""
    dist = {"lr": optuna.distributions.FloatDistribution(*LR_RANGE, log=True)}
    study = optuna.create_study(sampler=sampler)
    while len(study.trials) < n:
        asked = [study.ask(dist) for _ in range(min(batch, n - len(study.trials)))]
        for t in asked:
            study.tell(t, loss(t.params["lr"]))
    done = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
    if not done:
        return math.inf
    return math.log2(min(done, key=lambda t: t.value).params["lr"])


def hit_fraction(
    make: Callable[[int, int], optuna.samplers.BaseSampler],
    n: int,
    replicates: int,
    tol: float = 0.25,
    batch: int = 1,
    first: int = 0,
) -> float:
    """The fraction of replicates ``first..first+replicates-1`` whose best trial is within ``tol`` octaves of x0."""
    hits = 0
    for r in range(first, first + replicates):
        x0, loss = planted(r)
        hits += abs(best_x(make(r, n), loss, n, batch) - x0) <= tol
    return hits / replicates


SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "random": lambda seed, n: optuna.samplers.RandomSampler(seed=seed),
    "TPE, default start-up (10)": lambda seed, n: optuna.samplers.TPESampler(seed=seed),
    "TPE, old tune_runner (N//3)": lambda seed, n: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(2, n // 3))
    ),
    "TPE multivariate, 3 start-up": lambda seed, n: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=3, multivariate=True
    ),
    "tune_base.base_sampler (GP, 3 start-up)": lambda seed, n: base_sampler(seed, SPACE),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--trials", type=int, nargs="+", default=[6, 10, 20])
    ap.add_argument("--batch", type=int, default=1, help="trials asked before any is told (concurrent trials)")
    ap.add_argument("--tol", type=float, default=0.25, help="octaves from x0 that count as a hit")
    ap.add_argument("--only", nargs="+", default=None, help="sampler names (substrings) to run")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)  # GP's small products: one thread was a third faster on the 2-CPU machine
    warnings.filterwarnings("ignore")  # GPSampler: inf clipped, experimental arguments
    names = [s for s in SAMPLERS if not args.only or any(o in s for o in args.only)]
    print(
        f"best trial within {args.tol} octave of x0, {args.replicates} replicates, batch {args.batch}, "
        f"lr {LR_RANGE[0]}..{LR_RANGE[1]} ({math.log2(LR_RANGE[1] / LR_RANGE[0]):.1f} octaves)"
    )
    width = max(map(len, names))
    print(f"{'sampler':<{width}} " + " ".join(f"{'N=' + str(n):>6}" for n in args.trials) + "   seconds")
    for name in names:
        t0 = time.perf_counter()
        fracs = [hit_fraction(SAMPLERS[name], n, args.replicates, args.tol, args.batch) for n in args.trials]
        cells = " ".join(f"{f:>6.2f}" for f in fracs)
        print(f"{name:<{width}} {cells}   {time.perf_counter() - t0:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
