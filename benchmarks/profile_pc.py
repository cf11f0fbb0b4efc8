"""Where a PC step's time goes: torch.profiler's table of one benchmark-sized PC step, by op and shape.

    python benchmarks/profile_pc.py [--steps T] [--width N] [--reps K]

The big products show up as ``aten::mm`` / ``aten::addmm`` on [128, 1024] × [1024, 1024]; the
rest is elementwise work and the small output-layer products. Figures in NOTES.md come from this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer_bench import BATCH, WIDTH, _trainer_step  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="inference steps T (default 20)")
    p.add_argument("--width", type=int, default=WIDTH, help=f"hidden width (default {WIDTH})")
    p.add_argument("--reps", type=int, default=10, help="profiled training steps (default 10)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    step = _trainer_step(args.width, BATCH, algorithm="pc", parametrization="mup", inference_steps=args.steps)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.reps):
            step()
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=20, max_shapes_column_width=56
        )
    )
    print(f"{args.reps} PC steps, T = {args.steps}, width {args.width}, batch {BATCH}, 2 threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
