"""Planned against real wall time: ``--dry-run``'s "expected wall time" beside the command's own.

For each case, in order, with one per-host overheads cache (``--cache``, a fresh file by default):

1. ``mutransfer CMD SPACE --dry-run`` twice: with no cache and an empty results directory (the plan's
   constants: "assumed") and with the cache and the results directory the cases share (what earlier
   cases measured: "measured");
2. the command itself, timed from before its process starts to after it exits;
3. :func:`orchestrator.engine.overheads.remember` of its stages (with the command's start and end and
   the trial-seconds the plan calibrated), so the next case's plan uses them.

It prints one Markdown row per case: planned (assumed), planned (measured), real, their ratios, the load
average before, after and meanwhile (sampled every 5 s; the cache keeps it per CPU, and the plan scales
what earlier runs measured by the contention now against theirs). The machine may be shared: say so beside the numbers.

    python benchmarks/plan_bench.py [--cases tiny,medium,full] [--cache FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = """
name: tiny
trainer: {algorithm: bp, depth: 3, activation: tanh, base_width: 16}
data: {dataset: fmnist, subset: 300, test_subset: 200}
train: {epochs: 2, batch_size: 50}
grid:
  width: [16, 32]
  lr: [0.015625, 0.0625, 0.25, 256.0]
resources: {cpu: 1}
"""
# name -> (command, space, overrides)
CASES = {
    "tiny": ("sweep", None, []),  # 8 trials of the tests' tiny space
    "tiny2": ("sweep", None, ["name=tiny2"]),  # the same again, planned from what the others measured
    "medium": (  # 2 x 3 x 7 = 42 trials of the smoke space, 2000 images, 2 epochs
        "sweep",
        ROOT / "search_spaces" / "smoke.yaml",
        ["name=medium", "grid.width=[64,128,256]", "grid.lr={log2: [-10, 2, 2]}"],
    ),
    "full": (  # the full Fashion-MNIST (60000 images), 1 epoch, 2 x 3 = 6 trials
        "sweep",
        ROOT / "search_spaces" / "bp_mlp_fmnist.yaml",
        [
            "name=full",
            "data.subset=0",
            "data.test_subset=0",
            "train.epochs=1",
            "grid.parametrization=[mup]",
            "grid.width=[64,256]",
            "grid.lr={log2: [-6, -2, 2]}",
            "grid.seed=[0]",
        ],
    ),
    "demo": ("verify", ROOT / "search_spaces" / "demo.yaml", []),
}
CASES.update(  # the same again under other names: planned from what the earlier cases measured
    {
        f"{k}2": (cmd, space, [o for o in over if not o.startswith("name=")] + [f"name={k}2"])
        for k, (cmd, space, over) in list(CASES.items())
        if k in ("medium", "full")
    }
)
WALL = re.compile(r"expected wall time: ~(?:(\d+)h)?(?:(\d+)m)?(\d+)s")
COST = re.compile(r"estimated cost of the trials to run: ~(\d+) trial-seconds")
RATIO = re.compile(r"calibrated here \(.*?x (\d+\.\d+), the ratio")


def _seconds(m: re.Match | None) -> float | None:
    return None if m is None else 3600 * int(m.group(1) or 0) + 60 * int(m.group(2) or 0) + int(m.group(3))


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """``mutransfer ARGS`` in a fresh process, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def plan(command: str, space: Path, overrides: list[str], results: Path, env: dict) -> dict:
    """The dry run's expected wall, its trial-seconds and whether they were calibrated (the unscaled sum)."""
    proc = cli([command, str(space), *overrides, "--results", str(results), "--dry-run"], env)
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stderr[-2000:]}")
    out = proc.stdout
    wall = _seconds(WALL.search(out))
    cost = COST.search(out)
    ratio = RATIO.search(out)
    # the plan prints whole trial-seconds: a ratio real / calibrated needs enough of them
    calibrated = "calibrated here" in out and "recorded done" not in out and cost and int(cost.group(1)) >= 20
    train = float(cost.group(1)) / (float(ratio.group(1)) if ratio else 1.0) if cost and calibrated else None
    line = next((ln for ln in out.splitlines() if ln.startswith("expected wall time")), "")
    return {"wall": wall, "calibrated_train_s": train, "line": line}


def run_case(name: str, results: Path, cache: Path, scratch: Path) -> dict:
    """Plan (assumed, measured), run and remember one case."""
    from orchestrator.engine.overheads import remember

    command, space, overrides = CASES[name]
    if space is None:
        space = scratch / "tiny.yaml"
        space.write_text(TINY)
    ray_tmp = tempfile.mkdtemp(prefix="pb", dir="/tmp")
    base = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    base.pop("MLFLOW_TRACKING_URI", None)
    assumed = plan(
        command, space, overrides, scratch / f"empty-{name}", {**base, "MUTRANSFER_OVERHEADS": "/nonexistent"}
    )
    env = {**base, "MUTRANSFER_OVERHEADS": str(cache)}
    planned = plan(command, space, overrides, results, env)
    load0 = os.getloadavg()[0]
    t0 = time.time()
    # stderr to a file, not a pipe read at the end: a verify's progress lines fill a pipe's buffer
    # (64 KiB) in a few minutes, and the command then blocks writing the next one
    err_file = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", command, str(space), *overrides, "--results", str(results)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        text=True,
    )
    samples = []
    while proc.poll() is None:  # the 1-minute load average every 5 s while it runs
        samples.append(os.getloadavg()[0])
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    t1 = time.time()
    load1 = os.getloadavg()[0]
    err_file.seek(0)
    err = err_file.read()
    err_file.close()
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{err[-3000:]}")
    load = sum(samples) / len(samples) / (os.cpu_count() or 1) if samples else None
    sweep_name = next(o.split("=", 1)[1] for o in [*overrides, "name=" + name] if o.startswith("name="))
    if name == "demo":
        sweep_name = "demo"
    d = results / sweep_name
    if (d / "base").is_dir():
        remember(d / "base", command_started=t0, path=cache, load=load)
        remember(d, command_ended=t1, path=cache, load=load)
    else:
        train = planned["calibrated_train_s"]
        remember(d, command_started=t0, command_ended=t1, planned_train_s=train, path=cache, load=load)
    real = t1 - t0
    return {
        "case": name,
        "trials": _count(d),
        "assumed": assumed["wall"],
        "measured": planned["wall"],
        "real": real,
        "load": f"{load0:.1f} -> {load1:.1f} (mean {load * (os.cpu_count() or 1):.1f})" if load else "",
        "line": planned["line"],
    }


def _count(d: Path) -> int:
    from analysis.parts import read_trials

    n = len(read_trials(d))
    return n + (len(read_trials(d / "base")) if (d / "base").is_dir() else 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="tiny,medium,full", help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--cache", type=Path, default=None, help="the overheads cache (default: a fresh file)")
    p.add_argument("--keep", type=Path, default=None, help="results directory (default: a temporary one)")
    args = p.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    results = args.keep or scratch / "results"
    cache = args.cache or scratch / "overheads.json"
    print("| case | trials | planned, assumed | planned, measured | real | assumed / real | measured / real | load |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.cases.split(","):
        r = run_case(name, results, cache, scratch)
        rows.append(r)

        def ratio(x, r=r):
            return f"{x / r['real']:.2f}" if x else "-"

        print(
            f"| {r['case']} | {r['trials']} | {r['assumed']}s | {r['measured']}s | {r['real']:.0f}s | "
            f"{ratio(r['assumed'])} | {ratio(r['measured'])} | {r['load']} |",
            flush=True,
        )
    for r in rows:
        print(f"{r['case']}: {r['line']}")
    print(json.dumps({"cache": str(cache), "results": str(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
