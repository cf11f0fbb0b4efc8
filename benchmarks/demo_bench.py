"""The demo's own trial mix through the real driver: how much of verify's wall time is training.

Runs ``mutransfer verify search_spaces/demo.yaml`` (without MLflow, in a temporary results
directory) and reads back what its trials recorded: each trial's own ``wall_s`` (its training
time) and its ``started_at`` / ``finished_at`` (epoch seconds, taken in the worker and the driver).
For each phase (tune-base's trials in ``base/``, the transfer trials of the bracket, refinement and
seeding rounds) the ratio

    phase wall (first trial start -> last trial recorded) / (sum of the trials' wall_s / workers)

is 1.0 when the workers train all the time, and the start-up (command start -> first trial
start: imports, checks, Ray) is reported on its own row. Compare only ratios from one run.

    python benchmarks/demo_bench.py [--space search_spaces/demo.yaml] [--keep DIR] [override ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def phase(trials: pd.DataFrame, workers: int) -> dict[str, float]:
    """Wall span, summed training time, trial count and the overhead ratio of one phase's trials."""
    start, end = float(trials.started_at.min()), float(trials.finished_at.max())
    work = float(trials.wall_s.sum())
    span = end - start
    return {"trials": len(trials), "span_s": span, "work_s": work, "ratio": span / (work / workers), "start": start}


def planned_wall(command: str, space: Path, overrides: list[str], results: Path, env: dict) -> float | None:
    """The wall time ``mutransfer COMMAND SPACE --dry-run`` expects (seconds), None if it states none."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", command, str(space), *overrides, "--results", str(results)]
        + ["--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    m = re.search(r"expected wall time: ~(?:(\d+)h)?(?:(\d+)m)?(\d+)s", proc.stdout)
    if not m:
        return None
    return 3600 * int(m.group(1) or 0) + 60 * int(m.group(2) or 0) + int(m.group(3))


def run(space: Path, overrides: list[str], workers: int, keep: Path | None = None) -> dict[str, dict]:
    """Run verify once and measure its phases (see the module docstring)."""
    results = keep or Path(tempfile.mkdtemp(prefix="demo-bench-"))
    ray_tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    planned = planned_wall("verify", space, overrides, results, env)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "verify", str(space), *overrides, "--results", str(results)]
        + ["--no-mlflow"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    total = time.time() - t0
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(f"verify failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    name = next(p for p in results.iterdir() if (p / "base").is_dir())
    base = pd.read_parquet(name / "base" / "trials.parquet")
    transfer = pd.read_parquet(name / "trials.parquet")
    out = {"tune-base": phase(base, workers), "verify (transfer)": phase(transfer, workers)}
    out["start-up"] = {"span_s": out["tune-base"]["start"] - t0}
    out["command"] = {
        "span_s": total,
        "work_s": float(base.wall_s.sum() + transfer.wall_s.sum()),
        "trials": len(base) + len(transfer),
    }
    out["command"]["ratio"] = total / (out["command"]["work_s"] / workers)
    if planned is not None:
        out["plan (--dry-run's expected wall; ratio: planned / real)"] = {"span_s": planned, "ratio": planned / total}
    return out


def table(measured: dict[str, dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| phase | trials | wall (s) | Σ trial wall_s (s) | wall / (Σ wall_s / workers) |",
        "|---|---|---|---|---|",
    ]
    for name, m in measured.items():
        trials = m.get("trials", "")
        work = f"{m['work_s']:.1f}" if "work_s" in m else ""
        ratio = f"{m['ratio']:.2f}" if "ratio" in m else ""
        lines.append(f"| {name} | {trials} | {m['span_s']:.1f} | {work} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "demo.yaml")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="concurrent trials (CPUs / cpu)")
    p.add_argument("--keep", type=Path, default=None, help="results directory to keep (default: a temporary one)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides passed to verify")
    args = p.parse_args(argv)
    print(table(run(args.space, args.overrides, args.workers, args.keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
