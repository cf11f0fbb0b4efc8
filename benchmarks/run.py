"""`make bench`: measure every performance goal of issues 9 and 14 in one run; print a table, write RESULTS.md.

All figures are ratios of times measured in this same run (never absolute
thresholds): the machines are shared and noisy.

    python benchmarks/run.py [--quick] [--skip-sweep] [--compare-old] [--smoke] [--repeats N] [--out FILE]
    python benchmarks/run.py --only store|sweep [--out FILE]   (updates those rows of FILE)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from trainer_bench import bench_trainers  # noqa: E402

from trainers import _products as products  # noqa: E402

# TP step's own count of 128×1024×1024-class products, in BP-step units (see tp_products()).


def tp_products() -> tuple[float, str]:
    """TP step's matrix products in BP-step units, FLOP-weighted (the TP trainer's own count).

    BP on 784-1024-1024-10: 8 products (forward 3, weight gradients 3, input gradients 2).
    TP with linear feedback and one feedback step: 14 products (forward 3, target propagation
    through the feedback maps, local weight gradients 3, the feedback's difference-reconstruction
    step); weighted by their sizes they cost 1.664 BP steps.
    """
    return 1.664, "14 products vs BP's 8, FLOP-weighted 1.664 BP steps"


def cpu_description() -> str:
    """The CPU's model name, family/model and its SIMD flags (from ``lscpu``; /proc/cpuinfo if absent)."""
    fields: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}
    except (OSError, subprocess.SubprocessError):
        pass
    if "Flags" not in fields and Path("/proc/cpuinfo").exists():
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = ln.partition(":")
            names = {"model name": "Model name", "flags": "Flags", "cpu family": "CPU family", "model": "Model"}
            if k.strip() in names:
                fields.setdefault(names[k.strip()], v.strip())
    simd = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "fma", "amx", "sse4"))]
    return (
        f"{fields.get('Model name', platform.processor() or 'unknown CPU')} (family {fields.get('CPU family', '?')}, "
        f"model {fields.get('Model', '?')}; SIMD flags: {' '.join(simd) or 'unknown'})"
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--repeats {text!r}: a whole number ≥ 1")
    return int(text)


def trainer_goals(runs: list[dict[str, float]]) -> list[tuple[str, list[float], float | None, str]]:
    """(goal, its value in each repeat, target or None for a diagnostic, note from the median run)."""

    def each(f):
        return [f(t) for t in runs]

    mid = {k: statistics.median(t[k] for t in runs) for k in runs[0]}
    goals = []
    if "pc_T5" in mid:
        marginal = (mid["pc_T20"] - mid["pc_T5"]) / 15
        goals += [
            ("PC step / BP step, T = 5", each(lambda t: t["pc_T5"] / t["bp_mup"]), 2.5, ""),
            ("PC step / BP step, T = 20", each(lambda t: t["pc_T20"] / t["bp_mup"]), 8.0, ""),
            (
                "marginal inference step / its two products on the fastest backend",
                each(lambda t: (t["pc_T20"] - t["pc_T5"]) / 15 / t["two_products"]),
                1.15,
                f"{marginal * 1e3:.2f} ms vs {mid['two_products'] * 1e3:.2f} ms, medians",
            ),
            (
                "PC step / BP step, T = 20, were each of the 15 extra inference steps exactly its two products",
                each(lambda t: (t["pc_T5"] + 15 * t["two_products"]) / t["bp_mup"]),
                None,
                "",
            ),
        ]
    if "jax_bp" in mid:
        goals.append(
            (
                "our BP μP step / the plain-JAX BP step (benchmarks/jax_peer.py; below 1: ours is ahead)",
                each(lambda t: t["bp_mup"] / t["jax_bp"]),
                0.9,
                "",
            )
        )
    if "jax_pc_T5" in mid and "pc_T5" in mid:
        for T in (5, 20):
            goals.append(
                (
                    f"plain-JAX peer's PC step / its BP step, T = {T}",
                    each(lambda t: t[f"jax_pc_T{T}"] / t["jax_bp"]),
                    None,
                    "",
                )
            )
            goals.append(
                (
                    f"our PC step / the plain-JAX peer's, T = {T} (below 1: ours is ahead)",
                    each(lambda t: t[f"pc_T{T}"] / t[f"jax_pc_T{T}"]),
                    0.9,
                    "",
                )
            )
    if "jax_tp" in mid and "tp" in mid:
        goals.append(
            (
                "our TP step / the plain-JAX peer's (below 1: ours is ahead)",
                each(lambda t: t["tp"] / t["jax_tp"]),
                None,
                "",
            )
        )
    if "tp" in mid:
        units, text = tp_products()
        goals.append(
            (
                f"TP step / BP step, against its product count {units:.2f}",
                each(lambda t: t["tp"] / t["bp_mup"] / units),
                1.3,
                f"{mid['tp'] / mid['bp_mup']:.2f} BP steps; {text}",
            )
        )
    goals.append(
        (
            "BP μP step / the fastest plain BP step we wrote (explicit chain rule, fastest products, SGD in place)",
            each(lambda t: t["bp_mup"] / t["plain_bp_fast"]),
            1.05,
            "",
        )
    )
    goals.append(
        (
            "BP μP step / plain nn.Linear + SGD step (torch's default backend)",
            each(lambda t: t["bp_mup"] / t["plain_torch"]),
            1.05,
            "",
        )
    )
    for key in ("bp_mup", "pc_T5", "pc_T20", "tp", "two_products"):
        if f"{key}_old" in mid:
            how = "every product on torch's own MKL" + (", BP by autograd" if key == "bp_mup" else "")
            goals.append(
                (
                    f"{key}: new path / old path ({how})",
                    each(lambda t: t[key] / t[f"{key}_old"]),
                    None,
                    f"{mid[key] * 1e3:.2f} ms vs {mid[key + '_old'] * 1e3:.2f} ms, medians",
                )
            )
    return goals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    p.add_argument("--skip-sweep", action="store_true", help="skip the sweep, tracking and results-store parts")
    p.add_argument(
        "--compare-old",
        action="store_true",
        help="also time the steps on the path before issue 14 (every product on torch's own MKL, BP by "
        "autograd), in the same round-robin: the before/after rows",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (width 64, batch 16, 2 one-epoch trials of 500 images), one round: checks that "
        "the harness runs, its figures mean nothing (tests/benchmarks)",
    )
    p.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        help="measure the trainer figures this many times (each a full round-robin); the table gives "
        "the median and the range, the verdict goes by the median (default 3)",
    )
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="where to write the markdown table")
    p.add_argument(
        "--only",
        choices=("store", "sweep", "demo"),
        default=None,
        help="run only this part and replace (or add) its rows in --out, leaving the other rows",
    )
    args = p.parse_args(argv)
    if args.only:
        return partial(args.only, args)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    rounds, reps = (1, 2) if args.smoke else (2, 4) if args.quick else (5, 10)
    sizes = {"width": 64, "batch": 16} if args.smoke else {}
    started = time.time()

    rows: list[tuple[str, str, str, str]] = []  # (goal, measured, target, verdict)
    repeats = 1 if args.smoke or args.quick else args.repeats
    runs = []
    for i in range(repeats):
        include = ("pc", "tp", "jax") + (("old",) if args.compare_old else ())
        runs.append(bench_trainers(rounds=rounds, reps=reps, include=include, **sizes))
        print(
            f"repeat {i + 1}/{repeats}, seconds per step (medians):",
            {k: f"{v * 1e3:.2f} ms" for k, v in runs[-1].items()},
            flush=True,
        )
    if "pc_T5" in runs[0] and "jax_pc_T5" not in runs[0]:
        rows.append(
            (
                "plain-JAX peer's PC step",
                "not measured: JAX is not installed (pip install -e '.[bench]')",
                "(diagnostic)",
                "-",
            )
        )
    for goal, values, target, note in trainer_goals(runs):
        value = statistics.median(values)
        spread = f" [{min(values):.2f}–{max(values):.2f} over {len(values)} repeats]" if len(values) > 1 else ""
        verdict = "-" if target is None else "met" if value <= target else "MISSED"
        rows.append(
            (
                goal,
                f"{value:.2f}{spread}" + (f" ({note})" if note else ""),
                "(diagnostic)" if target is None else f"≤ {target:.2f}",
                verdict,
            )
        )
    t = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    if not args.skip_sweep:
        from sweep_bench import bench_sweep  # noqa: E402

        for row in bench_sweep(quick=args.quick, smoke=args.smoke):
            rows.append(row)
        rows += _store_rows(args.smoke)
        if not args.smoke and not args.quick:
            rows += _demo_rows()

    header = ["goal", "measured", "target", "verdict"]
    widths = [max(len(r[i]) for r in rows + [tuple(header)]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    table = "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
    print(table)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("BENCH_THREADS", "XLA_FLAGS") if os.environ.get(k))
    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    command = " ".join(p for p in (env, "python benchmarks/run.py", args_text) if p)
    command = "make bench" if command == "python benchmarks/run.py" else command
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    Path(args.out).write_text(
        "# Benchmark results\n\n"
        f"Measured by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {machine}; "
        f"CPU: {cpu_description()}; product backends (trainers/_products.py, MUTRANSFER_MATMUL="
        f"{products.forced()}): {products.used() or 'none'}. "
        + ("SMOKE RUN at tiny sizes (784-64-64-10, batch 16): the figures mean nothing. " if args.smoke else "")
        + f"784-1024-1024-10 tanh MLP, batch 128, float32, no biases. Every ratio's numerator and denominator "
        f"come from the same repeat of this run, measured round-robin, call by call (medians of {rounds * reps} "
        f"calls each); the trainer figures were measured {repeats} time(s): the median, the range in brackets.\n\n"
        f"Seconds per step (medians over the repeats): "
        + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items())
        + "\n\n"
        + table
        + "\n\nWhat was profiled and tried, with before/after figures: [NOTES.md](NOTES.md).\n"
    )
    print(f"wrote {args.out} ({time.time() - started:.0f}s)")
    return 0


def _store_rows(smoke: bool) -> list[tuple[str, str, str, str]]:
    from store_bench import bench_store  # noqa: E402

    return bench_store(sizes=(10, 30), probes=3) if smoke else bench_store()


def _demo_rows() -> list[tuple[str, str, str, str]]:
    """The demo's own trial mix through the real driver (``demo_bench.py``): issue 27's overhead goals."""
    from demo_bench import run as run_demo  # noqa: E402

    m = run_demo(HERE.parent / "search_spaces" / "demo.yaml", [], max(1, os.cpu_count() or 1))
    rows = [("demo start-up (command start -> first trial)", f"{m['start-up']['span_s']:.1f} s", "<= 10 s", "")]
    for phase, goal in (("verify (transfer)", 1.15), ("tune-base", 1.3)):
        r = m[phase]["ratio"]
        rows.append(
            (
                f"demo {phase}: wall / (sum of trial wall_s / workers)",
                f"{r:.2f} ({m[phase]['span_s']:.0f} s, {m[phase]['trials']} trials)",
                f"<= {goal}",
                "met" if r <= goal else "missed",
            )
        )
    return rows


def partial(part: str, args: argparse.Namespace) -> int:
    """``--only``: run one part; its rows replace the rows of the same goal in ``--out`` (added if absent)."""
    if part == "store":
        rows = _store_rows(args.smoke)
    elif part == "demo":
        rows = _demo_rows()
    else:
        from sweep_bench import bench_sweep  # noqa: E402

        rows = bench_sweep(quick=args.quick, smoke=args.smoke)
    out = Path(args.out)
    lines = (
        out.read_text().splitlines()
        if out.exists()
        else ["# Benchmark results", "", "| goal | measured | target | verdict |", "|---|---|---|---|"]
    )
    for row in rows:
        text = "| " + " | ".join(row) + " |"
        at = [
            i
            for i, line in enumerate(lines)
            if line.startswith("|") and line.strip("| ").split(" |")[0].strip() == row[0]
        ]
        if at:
            lines[at[0]] = text
        else:
            last = max(i for i, line in enumerate(lines) if line.startswith("|"))
            lines.insert(last + 1, text)
        print(text)
    note = (
        f"Rows of `--only {part}` measured on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (a partial run; the other rows are older)."
    )
    lines = [line for line in lines if not line.startswith(f"Rows of `--only {part}`")]
    lines.insert(max(i for i, line in enumerate(lines) if line.startswith("|")) + 2, note + "\n")
    out.write_text("\n".join(lines) + "\n")
    print(f"updated {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
