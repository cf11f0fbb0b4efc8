"""`make bench`: measure every performance goal of issue 9 in one run; print a table, write RESULTS.md.

All figures are ratios of times measured in this same run (never absolute
thresholds): the machines are shared and noisy.

    python benchmarks/run.py [--quick] [--skip-sweep] [--smoke] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from trainer_bench import bench_trainers  # noqa: E402

# TP step's own count of 128×1024×1024-class products, in BP-step units (see tp_products()).


def tp_products() -> tuple[float, str]:
    """TP step's matrix products in BP-step units, FLOP-weighted (the TP trainer's own count).

    BP on 784-1024-1024-10: 8 products (forward 3, weight gradients 3, input gradients 2).
    TP with linear feedback and one feedback step: 14 products (forward 3, target propagation
    through the feedback maps, local weight gradients 3, the feedback's difference-reconstruction
    step); weighted by their sizes they cost 1.664 BP steps.
    """
    return 1.664, "14 products vs BP's 8, FLOP-weighted 1.664 BP steps"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    p.add_argument("--skip-sweep", action="store_true", help="skip the sweep and tracking overhead parts")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (width 64, batch 16, 2 one-epoch trials of 500 images), one round: checks that "
                        "the harness runs, its figures mean nothing (tests/benchmarks)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="where to write the markdown table")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    rounds, reps = (1, 2) if args.smoke else (2, 4) if args.quick else (5, 10)
    sizes = {"width": 64, "batch": 16} if args.smoke else {}
    started = time.time()

    rows: list[tuple[str, str, str, str]] = []  # (goal, measured, target, verdict)

    def add(goal: str, value: float, target: float, fmt: str = "{:.2f}", le: bool = True, note: str = ""):
        ok = value <= target if le else value >= target
        rows.append((goal, fmt.format(value) + (f" ({note})" if note else ""),
                     ("≤ " if le else "≥ ") + fmt.format(target), "met" if ok else "MISSED"))

    t = bench_trainers(rounds=rounds, reps=reps, **sizes)
    bp = t["bp_mup"]
    print("seconds per step (medians):", {k: f"{v * 1e3:.2f} ms" for k, v in t.items()})
    if "pc_T5" in t:
        add("PC step / BP step, T = 5", t["pc_T5"] / bp, 2.5)
        add("PC step / BP step, T = 20", t["pc_T20"] / bp, 8.0)
        marginal = (t["pc_T20"] - t["pc_T5"]) / 15
        add("marginal inference step / two 128×1024×1024 products", marginal / t["two_products"], 1.15,
            note=f"{marginal * 1e3:.2f} ms vs {t['two_products'] * 1e3:.2f} ms")
        floor = (t["pc_T5"] + 15 * t["two_products"]) / bp
        rows.append(("PC step / BP step, T = 20, were each of the 15 extra inference steps exactly its two products",
                     f"{floor:.2f}", "(diagnostic)", "-"))
    if "tp" in t:
        units, text = tp_products()
        add(f"TP step / BP step, against its product count {units:.2f}", (t["tp"] / bp) / units, 1.3,
            note=f"{t['tp'] / bp:.2f} BP steps; {text}")
    add("BP μP step / plain nn.Linear + SGD step", bp / t["plain_torch"], 1.05)

    if not args.skip_sweep:
        from sweep_bench import bench_sweep  # noqa: E402

        for row in bench_sweep(quick=args.quick, smoke=args.smoke):
            rows.append(row)

    header = ["goal", "measured", "target", "verdict"]
    widths = [max(len(r[i]) for r in rows + [tuple(header)]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    table = "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
    print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    Path(args.out).write_text(
        "# Benchmark results\n\n"
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {machine}; "
        + ("SMOKE RUN at tiny sizes (784-64-64-10, batch 16): the figures mean nothing. " if args.smoke else "")
        + f"784-1024-1024-10 tanh MLP, batch 128, float32, no biases. Every ratio's numerator and denominator "
        f"come from this same run, measured round-robin, call by call "
        f"(medians of {rounds * reps} calls each).\n\n"
        f"Seconds per step: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items()) + "\n\n" + table + "\n")
    print(f"wrote {args.out} ({time.time() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
