"""Trials in packs vs one Tune trial per trial: the same ~100 tiny trials, run both ways on one embedded Ray.

    python benchmarks/pack_bench.py [--trials-per-width 32] [--workers 2]

Prints, for each way, the wall of ``tune_runner.run_trials``, the trials' own training seconds
(sum of ``wall_s``) and the overhead ratio ``wall / (sum wall_s / workers)`` (1.0: no overhead).
Both ways run in the same Ray session, one after the other (one-per-trial first) after a warm-up
run of 4 trials (Ray's first workers), with ``MUTRANSFER_MATMUL=torch`` so that both train the same
products. Each run pays a fixed start-up (new Tune actors import torch and the trainers): ``first
start`` is when its first trial started; what comes after is per-trial cost.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = """
name: packbench
trainer: {algorithm: bp, depth: 3, base_width: 16}
data: {dataset: teacher, subset: 2048, test_subset: 256}
train: {epochs: 3, batch_size: 64}
grid: {width: [32, 128, 256], lr: LRS, seed: SEEDS}
max_failures: 2
resources: {cpu: 1}
"""


def _run(sweep, results: Path, workers: int, pack_seconds: float | None) -> tuple[float, float, int, float]:
    from orchestrator.engine import tune_runner
    from orchestrator.engine.progress import Progress
    from orchestrator.engine.recorder import Recorder
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(results / sweep.name)
    rec = Recorder(sweep, store, None, Progress(len(sweep.trials), stream=io.StringIO(), tty=False))
    t0 = time.perf_counter()
    tune_runner.run_trials(
        [t.to_dict() for t in sweep.trials],
        rec,
        store.dir / "tune",
        sweep.name,
        max_concurrent=workers,
        pack_seconds=pack_seconds,
    )
    wall = time.perf_counter() - t0
    trials = store.trials()
    first = float(trials.started_at.min()) - (time.time() - wall)
    return wall, float(trials.wall_s.sum()), len(trials), first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials-per-width", type=int, default=32, help="lr x seed points per width (8 lrs)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    seeds = max(1, args.trials_per_width // 8)
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    os.environ.setdefault("MUTRANSFER_MATMUL", "torch")
    from orchestrator.engine import tune_runner
    from orchestrator.spec.config import load_sweep

    tmp = Path(tempfile.mkdtemp(prefix="packbench"))
    space = tmp / "space.yaml"
    lrs = [2.0**-k for k in range(8)]
    space.write_text(textwrap.dedent(SPACE).replace("LRS", str(lrs)).replace("SEEDS", str(list(range(seeds)))))
    sweep = load_sweep(space)
    tune_runner.connect()
    try:
        warm = load_sweep(space)
        warm.trials = warm.trials[:4]
        _run(warm, tmp / "warm-up", args.workers, 0.0)
        for label, pack_seconds in (("one trial per Tune trial", 0.0), ("packs (default)", None)):
            wall, train, n, first = _run(sweep, tmp / label.split()[0], args.workers, pack_seconds)
            print(
                f"{label:26s}: {n} trials, wall {wall:6.1f} s (first start {first:4.1f} s), sum wall_s "
                f"{train:6.1f} s, wall / (sum wall_s / {args.workers}) = {wall / (train / args.workers):.2f}, "
                f"after the first start {(wall - first) / (train / args.workers):.2f}",
                flush=True,
            )
    finally:
        tune_runner.shutdown()


if __name__ == "__main__":
    main()
