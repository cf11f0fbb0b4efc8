"""Sub-command `sweep`: run a sweep on Ray Tune (`sync` and `ui` are in :mod:`orchestrator.cli.cmd_ui`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from orchestrator.errors import BadInput

SMOKE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"


# ---- sweep -----------------------------------------------------------------------
def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="sweep definition (YAML), e.g. search_spaces/smoke.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="OmegaConf dotlist overrides, e.g. train.epochs=2 'grid.width=[64,128]'",
    )
    p.add_argument("--address", default=None, help="join the Ray cluster at ADDR (default: embedded Ray here)")
    p.add_argument("--results", default="results", help="results directory (default results)")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once (default: as the YAML)")
    p.add_argument("--no-mlflow", action="store_true", help="Parquet only")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, trial counts per axis, how many are already recorded, resources "
        "per trial and an estimated cost (recorded trials of this machine, else a few timed steps); "
        "run and write nothing",
    )
    p.add_argument(
        "--no-compact",
        action="store_true",
        help="leave each trial's part files (trials/, history/) as they are; `mutransfer compact` "
        "folds them into trials.parquet and history.parquet later",
    )


def _run_sweep(args: argparse.Namespace) -> int:
    from orchestrator.spec.config import load_sweep
    from orchestrator.studies.sweep import best_row, run_sweep

    if args.max_concurrent is not None and args.max_concurrent < 0:
        raise BadInput(f"--max-concurrent={args.max_concurrent} must be >= 0")
    sweep = load_sweep(args.space, args.overrides)
    from orchestrator.stores.paths import check_results_dir

    check_results_dir(args.results)
    if args.dry_run:
        from orchestrator.engine.plan import sweep_plan

        print("\n".join(sweep_plan(sweep, args.results, args.address, args.max_concurrent)))
        print(
            f"next: mutransfer sweep {shlex.join([args.space, *args.overrides, '--results', args.results])}   # runs it"
        )
        return 0
    print(
        f"sweep {sweep.name}: {len(sweep.trials)} trials over {', '.join(sweep.swept_keys)} "
        f"-> {Path(args.results).resolve() / sweep.name}",
        flush=True,
    )
    res = run_sweep(
        sweep,
        args.results,
        address=args.address,
        max_concurrent=args.max_concurrent,
        track=not args.no_mlflow,
        compact=not args.no_compact,
    )
    from orchestrator.stores.results_store import ResultsStore

    table = ResultsStore(res.sweep_dir).trials()
    totals = table.status.value_counts().to_dict() if not table.empty else {}
    print(
        f"this run: {res.total - res.skipped} trials ({', '.join(f'{k} {v}' for k, v in res.counts.items())}); "
        f"skipped {res.skipped} already done"
    )
    print(f"in {res.sweep_dir}: {len(table)} trials ({', '.join(f'{k} {v}' for k, v in sorted(totals.items()))})")
    metric = sweep.config.objective.metric
    best = best_row(table, metric, sweep.config.objective.mode)
    if best is not None:
        print(
            f"best {metric}: {best[metric]:.4g} "
            f"({best['algorithm']}/{best['parametrization']} width {best['width']} lr {best['lr']:.4g})"
        )
    if not res.tracking_uri:
        print("MLflow: off (--no-mlflow); `mutransfer sync` logs this sweep later")
    else:
        print(f"MLflow: {res.tracking_uri}" + ("" if res.tracked else " (unreachable: run `mutransfer sync` later)"))
    failed = totals.get("failed", 0)
    for line in next_lines(args.space, args.overrides, args.results, res.sweep_dir, failed):
        print(line)
    return 1 if failed else 0


def next_lines(space: str, overrides: list[str], results: str, sweep_dir: Path, failed: int = 0) -> list[str]:
    """What to run after a sweep: rerun its failed trials, the analysis, the MLflow UI."""
    lines = []
    if failed:
        again = " ".join([space, *(repr(o) if " " in o else o for o in overrides), "--results", results])
        lines.append(f"next: mutransfer sweep {again}   # runs the {failed} failed trial(s) again")
    lines += [f"next: mutransfer analyze {sweep_dir}", f"next: mutransfer ui --results {results}"]
    return lines


# ---- compact ---------------------------------------------------------------------
def _add_compact(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep's results directory, e.g. results/smoke (or its base/)")


def _run_compact(args: argparse.Namespace) -> int:
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(args.sweep_dir)
    if not store.dir.is_dir() or not store.has_trials():
        raise BadInput(f"{args.sweep_dir}: not a sweep's results directory (no trials.parquet or trials/)")
    from orchestrator.engine.lock import SweepLock

    sweep_dir = store.dir.parent if store.dir.name == "base" else store.dir
    with SweepLock(sweep_dir, "mutransfer compact"):  # a running driver still writes part files there
        n = store.compact()
    print(
        f"{store.dir}: folded {n} part file(s) into trials.parquet and history.parquet ({len(store.trials())} trials)"
    )
    print(f"next: mutransfer analyze {store.dir.parent if store.dir.name == 'base' else store.dir}")
    return 0


COMMANDS = {
    "sweep": (
        "Run a width x learning-rate sweep on Ray Tune; record Parquet and MLflow; resumable.",
        _add_sweep,
        _run_sweep,
    ),
    "compact": (
        "Fold a sweep's part files (trials/, history/) into trials.parquet and history.parquet.",
        _add_compact,
        _run_compact,
    ),
}
