"""Sweep, tracking and memory overheads, measured against a plain Python loop in the same run.

- Sweep overhead: 64 trials of about 10 s through the real sweep path (embedded Ray, 2 CPUs)
  against the same trials run one after another here (a sample of ``PLAIN`` of them, half before
  the sweep and half after; the trials differ only in lr, so they cost the same):
  wall ≤ 1.10 × (sum of trial times / concurrency), the one-off start-up (``ray.init``; Tune's
  set-up and its worker processes importing Ray Tune and torch, up to the first trial's start)
  reported separately.
- Tracking overhead: the driver's Parquet + MLflow recording of a trial (what the sweep's
  Recorder does when a trial finishes, one history row per epoch) against the trial's time.
- Memory: peak resident set (VmHWM from /proc) of every Ray worker that ran trials, and of the driver.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

TRIALS = 64
PLAIN = 8  # trials of the plain-loop baseline (4 before the sweep, 4 after)
EPOCHS = 12  # about 10 s per trial on this project's 2-CPU machine
SPACE = """
name: bench
trainer: {{algorithm: bp, depth: 3, activation: tanh, base_width: 64, parametrization: mup}}
data: {{dataset: fmnist, subset: {subset}, test_subset: 1000}}
train: {{epochs: {epochs}, batch_size: 128}}
grid:
  lr: {{log2: [-{lo}, -4, 1]}}   # all below the stability edge (2^-3 diverges): equal trials pack 2 by 2
  width: [{width}]
resources: {{cpu: 1}}
"""


def _peak_rss_mb(pid: int | str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _WorkerWatch(threading.Thread):
    """Samples the peak RSS of every process whose command line names a Tune trainable."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    cmd = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"ray::" in cmd and (b"trainable" in cmd or b"ImplicitFunc" in cmd):
                    self.peaks[d.name] = max(self.peaks.get(d.name, 0.0), _peak_rss_mb(d.name))
            self.stop.wait(0.5)


def _trial_records(results: Path) -> list[dict]:
    """One record per trial from Tune's result.json files (read once): ``pid`` (the worker's),
    ``started_at`` and ``reported_at`` (epoch seconds of its start and last report, from its own events:
    a Tune trial runs a pack of trials, ``orchestrator.engine.packs.member_results``) and ``time_total_s`` (its
    last report minus its start)."""
    import json

    from orchestrator.engine.packs import member_results

    out = []
    for f in results.glob("tune/*/*/result.json"):
        lines = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        if not lines:
            continue
        pid = int(lines[0]["pid"])
        for events in member_results(lines, f.parent.name).values():
            timed = [e for e in events if e.get("started_at") is not None]
            if timed:
                start, end = float(timed[-1]["started_at"]), float(events[-1].get("reported_at") or 0.0)
                out.append({"pid": pid, "started_at": start, "reported_at": end, "time_total_s": end - start})
    return out


def _spans(records: list[dict]) -> dict[int, list[tuple[float, float]]]:
    """Per worker process: (start, last report) of each trial it ran, in time order."""
    spans: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        spans.setdefault(r["pid"], []).append((r["started_at"], r["reported_at"]))
    return {pid: sorted(runs) for pid, runs in spans.items()}


def _handover_gaps(spans: dict[int, list[tuple[float, float]]]) -> list[float]:
    """Seconds between a trial's last report and the next trial's start in the same worker process."""
    return [b[0] - a[1] for runs in spans.values() for a, b in zip(runs, runs[1:])]


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_sweep(quick: bool = False, smoke: bool = False) -> list[tuple[str, str, str, str]]:
    """Rows (goal, measured, target, verdict) for the sweep, tracking and memory goals."""
    from orchestrator.engine import tune_runner
    from orchestrator.spec.config import load_sweep
    from orchestrator.stores.results_store import ResultsStore, trial_row
    from orchestrator.stores.tracking import Tracker
    from orchestrator.studies.sweep import run_sweep
    from trainers import TrainerConfig, load_dataset, make_trainer, train

    n = 2 if smoke else 4 if quick else TRIALS
    k = min(n, 2 if smoke or quick else PLAIN)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "bench.yaml"
        space.write_text(
            SPACE.format(
                subset=500 if smoke else 10000, epochs=1 if smoke else EPOCHS, lo=n + 3, width=64 if smoke else 512
            )
        )
        sweep = load_sweep(space)
        # 1. the same trials in a plain loop, one thread each (a trial's cpu: 1): half of them before
        # the sweep and half after, so that a slow phase of the machine weighs on both sides alike
        # the data is read once, as the sweep reads it once and ships it: a trial's time is its
        # trainer's build and training (reading the files each time made the baseline 1-4 s longer)
        first = sweep.trials[0]
        data = load_dataset(
            "fmnist", first.data["subset"], first.data["test_subset"], dtype=TrainerConfig(**first.trainer).torch_dtype
        )

        def plain(specs) -> None:
            torch.set_num_threads(1)
            for spec in specs:
                t0 = time.perf_counter()
                tc = TrainerConfig(**spec.trainer)
                histories[spec.trial_id] = train(
                    make_trainer(tc, data.input_dim, data.output_dim),
                    data,
                    spec.train["epochs"],
                    spec.train["batch_size"],
                    seed=tc.seed,
                )
                times.append(time.perf_counter() - t0)
            torch.set_num_threads(2)

        times: list[float] = []
        histories: dict[str, list] = {}
        plain(sweep.trials[: k // 2])
        concurrency = 2
        # 2. Ray start-up, then the sweep itself
        os.environ.setdefault("RAY_TMPDIR", str(Path(tmp) / "ray"))
        t0 = time.perf_counter()
        tune_runner.connect(None)
        ray_start = time.perf_counter() - t0
        # the MLflow SQLite store is created once per results directory (schema migrations): timed apart
        import mlflow

        t0 = time.perf_counter()
        mlflow.MlflowClient(f"sqlite:///{Path(tmp) / 'results' / 'mlflow.db'}").search_experiments()
        store_start = time.perf_counter() - t0
        watch = _WorkerWatch()
        watch.start()
        t0 = time.perf_counter()
        t0_wall = time.time()
        cpu0 = _cpu_seconds()
        run_sweep(sweep, Path(tmp) / "results", max_concurrent=concurrency)  # progress on stdout
        wall = time.perf_counter() - t0
        driver_cpu = _cpu_seconds() - cpu0
        records = _trial_records(Path(tmp) / "results" / "bench")
        spans = _spans(records)
        first_start = min(begin for runs in spans.values() for begin, _ in runs) - t0_wall
        watch.stop.set()
        watch.join()
        tune_runner.shutdown()
        plain(sweep.trials[len(sweep.trials) - (k - k // 2) :])
        ideal = n * statistics.mean(times) / concurrency
        steady = (wall - first_start) / ideal
        rows.append(
            (
                f"sweep wall after its one-off start-up / (sum of {n} trial times / {concurrency})",
                f"{steady:.2f} ({wall - first_start:.1f}s vs {ideal:.1f}s; trials {statistics.mean(times):.1f}s "
                f"each alone, mean of {len(times)} in a plain loop)",
                "≤ 1.10",
                "met" if steady <= 1.10 else "MISSED",
            )
        )
        rows.append(
            (
                "one-off start-up of a sweep (not in the ratio above)",
                f"first trial started {first_start:.1f}s after run_sweep did (Tune's set-up, then new worker "
                f"processes importing Ray Tune and torch); before it, Ray start-up {ray_start:.1f}s and the "
                f"MLflow store's creation {store_start:.1f}s",
                "reported",
                "-",
            )
        )
        rows.append(("the same ratio with the start-up", f"{wall / ideal:.2f} ({wall:.1f}s)", "(diagnostic)", "-"))
        inside = [r["time_total_s"] for r in records]
        if inside:
            rows.append(
                (
                    "trial time inside the sweep (2 at once) / alone in the plain loop",
                    f"{statistics.median(inside) / statistics.median(times):.2f} (medians, {len(inside)} trials: "
                    f"{statistics.median(inside):.2f}s vs {statistics.median(times):.2f}s; Tune's time_total_s)",
                    "(diagnostic)",
                    "-",
                )
            )
            rows.append(
                (
                    "sweep wall after start-up / (sum of the trials' own times inside the sweep / "
                    f"{concurrency}): the scheduling overhead alone",
                    f"{(wall - first_start) / (sum(inside) / concurrency):.2f}",
                    "(diagnostic)",
                    "-",
                )
            )
        gaps = _handover_gaps(spans)
        if gaps:
            last_report = max(end for runs in spans.values() for _, end in runs)
            rows.append(
                (
                    "hand-over: a trial's last report to the next trial's start in the same worker",
                    f"{statistics.median(gaps):.2f}s median, {max(gaps):.2f}s max over {len(gaps)} hand-overs; "
                    f"last report to the sweep's return {t0_wall + wall - last_report:.1f}s",
                    "(diagnostic)",
                    "-",
                )
            )
        rows.append(
            (
                "driver CPU time during the sweep / sweep wall",
                f"{100 * driver_cpu / wall:.0f} % of one core "
                f"({driver_cpu:.1f}s: Tune's control loop, the Recorder's Parquet and MLflow writes, progress)",
                "(diagnostic)",
                "-",
            )
        )
        # 3. tracking: the Recorder's Parquet + MLflow work for one trial, per trial time
        store = ResultsStore(Path(tmp) / "track" / "bench")
        tracker = Tracker(
            f"sqlite:///{Path(tmp) / 'track' / 'mlflow.db'}", "bench", artifact_root=Path(tmp) / "track" / "art"
        )
        tracker.start()
        costs = []
        for spec in (t for t in sweep.trials if t.trial_id in histories):
            hist = histories[spec.trial_id]
            t0 = time.perf_counter()
            row = trial_row("bench", spec.to_dict(), hist, "ok", "node", "host", "")
            store.record([row], {spec.trial_id: hist})
            tracker.log_trial(row, spec.to_dict(), hist)
            costs.append(time.perf_counter() - t0)
        tracker.finish()
        share = statistics.median(costs) / statistics.median(times)
        epochs = len(histories[sweep.trials[0].trial_id])
        rows.append(
            (
                "tracking (Parquet + MLflow) / trial time",
                f"{100 * share:.1f} % ({1e3 * statistics.median(costs):.0f} ms per trial of {epochs} epochs)",
                "≤ 3 %",
                "met" if share <= 0.03 else "MISSED",
            )
        )
        # 4. memory
        workers = sorted(watch.peaks.values())
        driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(
            (
                "peak RSS per trial worker process",
                (f"{max(workers):.0f} MB max over {len(workers)} workers" if workers else "not observed"),
                "reported",
                "-",
            )
        )
        rows.append(
            (
                "peak RSS of the driver (this process)",
                f"{driver:.0f} MB (it also ran the trainer benchmarks, if they ran; the JAX peer runs in a child process)",
                "reported",
                "-",
            )
        )
    return rows
