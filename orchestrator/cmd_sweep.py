"""Sub-commands `sweep`, `sync` and `ui`: run a sweep on Ray Tune, back-fill MLflow, browse it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from .errors import BadInput

SMOKE = Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml"


# ---- sweep -----------------------------------------------------------------------
def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="sweep definition (YAML), e.g. search_spaces/smoke.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="OmegaConf dotlist overrides, e.g. train.epochs=2 'grid.width=[64,128]'")
    p.add_argument("--address", default=None, help="join the Ray cluster at ADDR (default: embedded Ray here)")
    p.add_argument("--results", default="results", help="results directory (default results)")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once (default: as the YAML)")
    p.add_argument("--no-mlflow", action="store_true", help="Parquet only")
    p.add_argument("--no-compact", action="store_true",
                   help="leave each trial's part files (trials/, history/) as they are; `mutransfer compact` "
                        "folds them into trials.parquet and history.parquet later")


def _run_sweep(args: argparse.Namespace) -> int:
    from .config import load_sweep
    from .sweep import best_row, run_sweep

    if args.max_concurrent is not None and args.max_concurrent < 0:
        raise BadInput(f"--max-concurrent={args.max_concurrent} must be >= 0")
    sweep = load_sweep(args.space, args.overrides)
    from .paths import check_results_dir

    check_results_dir(args.results)
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials over {', '.join(sweep.swept_keys)} "
          f"-> {Path(args.results).resolve() / sweep.name}", flush=True)
    res = run_sweep(sweep, args.results, address=args.address, max_concurrent=args.max_concurrent,
                    track=not args.no_mlflow, compact=not args.no_compact)
    from .results_store import ResultsStore

    table = ResultsStore(res.sweep_dir).trials()
    totals = table.status.value_counts().to_dict() if not table.empty else {}
    print(f"this run: {res.total - res.skipped} trials ({', '.join(f'{k} {v}' for k, v in res.counts.items())}); "
          f"skipped {res.skipped} already done")
    print(f"in {res.sweep_dir}: {len(table)} trials "
          f"({', '.join(f'{k} {v}' for k, v in sorted(totals.items()))})")
    metric = sweep.config.objective.metric
    best = best_row(table, metric, sweep.config.objective.mode)
    if best is not None:
        print(f"best {metric}: {best[metric]:.4g} "
              f"({best['algorithm']}/{best['parametrization']} width {best['width']} lr {best['lr']:.4g})")
    if not res.tracking_uri:
        print("MLflow: off (--no-mlflow); `mutransfer sync` logs this sweep later")
    else:
        print(f"MLflow: {res.tracking_uri}" + ("" if res.tracked else " (unreachable: run `mutransfer sync` later)"))
    return 1 if totals.get("failed", 0) else 0


# ---- sync ------------------------------------------------------------------------
def _add_sync(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep's results directory, e.g. results/smoke")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow URI (default: the sweep's, $MLFLOW_TRACKING_URI, or sqlite:///<results>/mlflow.db)")


def _run_sync(args: argparse.Namespace) -> int:
    from .config import load_sweep
    from .results_store import ResultsStore
    from .tracking import Tracker, default_tracking_uri

    store = ResultsStore(args.sweep_dir)
    if not store.config_path.is_file() or not store.has_trials():
        raise BadInput(f"{args.sweep_dir}: not a sweep's results directory (no sweep.yaml and trials.parquet)")
    sweep = load_sweep(store.config_path)
    uri = args.tracking_uri or default_tracking_uri(store.dir.parent, sweep.config.tracking.uri)
    tracker = Tracker(uri, sweep.name, sweep.config.tracking.experiment,
                      artifact_root=store.dir.parent / "mlartifacts")
    if not tracker.start():
        return 1
    before = tracker.logged
    n = tracker.sync(store.trials(), store.history(), {t.trial_id: t.to_dict() for t in sweep.trials})
    tracker.finish()
    print(f"MLflow {uri}: {before} trials were there, back-filled {n}")
    return 0 if tracker.enabled else 1


# ---- compact ---------------------------------------------------------------------
def _add_compact(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep's results directory, e.g. results/smoke (or its base/)")


def _run_compact(args: argparse.Namespace) -> int:
    from .results_store import ResultsStore

    store = ResultsStore(args.sweep_dir)
    if not store.dir.is_dir() or not store.has_trials():
        raise BadInput(f"{args.sweep_dir}: not a sweep's results directory (no trials.parquet or trials/)")
    n = store.compact()
    print(f"{store.dir}: folded {n} part file(s) into trials.parquet and history.parquet ({len(store.trials())} trials)")
    return 0


# ---- ui --------------------------------------------------------------------------
def _add_ui(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results directory holding mlflow.db (default results)")
    p.add_argument("--tracking-uri", default=None, help="backend store URI (default: $MLFLOW_TRACKING_URI or "
                                                        "sqlite:///<results>/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line that serves ``uri``."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def _run_ui(args: argparse.Namespace) -> int:
    from .tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.results)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise BadInput(f"{uri.removeprefix('sqlite:///')}: no tracking store yet (run `mutransfer sweep` first)")
    if not 0 < args.port < 65536:
        raise BadInput(f"--port={args.port} is not a port number")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    print(f"MLflow UI on http://{args.host}:{args.port} for {uri} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(ui_command(uri, args.host, args.port), env=env, start_new_session=True)

    def stop(signum, frame):
        os.killpg(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(None, None)
        proc.wait(timeout=20)
        return 0


COMMANDS = {
    "sweep": ("Run a width x learning-rate sweep on Ray Tune; record Parquet and MLflow; resumable.",
              _add_sweep, _run_sweep),
    "sync": ("Back-fill MLflow from a sweep's Parquet tables (after the tracking server was down).",
             _add_sync, _run_sync),
    "compact": ("Fold a sweep's part files (trials/, history/) into trials.parquet and history.parquet.",
                _add_compact, _run_compact),
    "ui": ("The MLflow UI on the sweep's tracking store, bound to 127.0.0.1.", _add_ui, _run_ui),
}
