"""Sub-commands `tune-base` (Optuna at the base width), `verify` (does its learning rate transfer?) and `demo`."""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

from orchestrator.errors import BadInput

VERIFY_HELP = (
    "Tune the learning rate at the base width (Optuna), run it and a bracket lr*2^k (verify.bracket) at every "
    "width, parametrization and seed (grid.seed, else verify.seeds, default 3), refine each seed's optimum and "
    "stability edge to verify.resolution octaves (default 0.25), and judge the transfer. Each group "
    "'transfers' when its drift exponent's 95 percent interval lies within +-verify.max_drift (default 0.2), the "
    "upper bound of its excess regret over the base width's is <= verify.max_regret (default 0.05) and no width's "
    "optimum is edge-limited; 'drifts' when the interval lies outside +-max_drift or the excess regret's lower "
    "bound is above max_regret; otherwise 'inconclusive' (an edge-limited optimum never transfers). A muP group "
    "transfers only if its SP control drifts in the same run (else the setup cannot tell transfer from "
    "drift). SP groups are the control and are not judged (with no muP group, every group is judged). "
    "Groups still undecided (inconclusive, or an SP control a transferring muP group waits on) get "
    "verify.seed_step (default 3) more seeds per look up to verify.max_seeds (default 8); each look's "
    "intervals are at 1 - 0.05/looks. "
    "Exit 0 every muP group transfers, 1 one drifts, 2 bad input, 3 inconclusive."
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="sweep definition (YAML) with optional search:, objective:, verify: sections")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="OmegaConf dotlist overrides, e.g. search.trials=10 'grid.width=[64,256]'",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="COMPLETE Optuna trials per study (default search.trials); a rerun runs only the remainder",
    )
    p.add_argument("--results", default="results", help="results directory (default results)")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: an SQLAlchemy URL, journal:PATH (a journal file, for NFS and other shared "
        "file systems) or journal (RESULTS/NAME/optuna.journal); default search.storage, else "
        "sqlite:///RESULTS/NAME/optuna.db",
    )
    p.add_argument("--address", default=None, help="join the Ray cluster at ADDR (default: embedded Ray here)")
    p.add_argument("--no-mlflow", action="store_true", help="Parquet only")


def _load(args: argparse.Namespace):
    from orchestrator.spec.config import load_sweep

    if args.trials is not None and args.trials <= 0:
        raise BadInput(f"--trials={args.trials} must be a positive integer")
    return load_sweep(args.space, args.overrides)


def _fmt_params(params: dict | None) -> str:
    if not params:
        return "none (no finite trial)"
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def print_base(res) -> None:
    """One line per study: group, trials, best params and value."""
    for g in res.groups:
        label = ", ".join(f"{k}={v}" for k, v in g["group"].items()) or "all"
        extra = []
        if g["recovered"]:
            extra.append(f"{g['recovered']} recovered from Parquet")
        if g["marked_failed"]:
            extra.append(f"{g['marked_failed']} stale RUNNING marked FAIL")
        value = g["best_value"]
        shown = f"{g['metric']} {value:.4g}" if value is not None and math.isfinite(value) else "-"
        print(
            f"  [{label}] width {g['base_width']}: {g['trials_complete']} trials ({g['ran']} this run"
            f"{'; ' + '; '.join(extra) if extra else ''}); best {_fmt_params(g['best'])} ({shown})"
        )


def _run_tune_base(args: argparse.Namespace) -> int:
    from orchestrator.studies.tune_base import tune_base

    sweep = _load(args)
    print(
        f"tune-base {sweep.name}: Optuna (GP sampler) at the base width -> {Path(args.results).resolve() / sweep.name}",
        flush=True,
    )
    res = tune_base(
        sweep, args.results, trials=args.trials, storage=args.storage, address=args.address, track=not args.no_mlflow
    )
    print_base(res)
    print(f"best learning rates: {res.path}")
    print(f"study storage: {res.storage}; trials: {res.base_dir / 'trials.parquet'}")
    if res.tracking_uri:
        print(f"MLflow: {res.tracking_uri}" + ("" if res.tracked else " (unreachable: run `mutransfer sync` later)"))
    ok = all(g["best"] for g in res.groups)
    again = " ".join([args.space, *args.overrides, "--results", args.results])
    if ok:
        print(f"next: mutransfer verify {again}   # checks the transfer at every width (reuses these trials)")
    else:
        print(f"next: widen search.space.lr or add search.trials, then: mutransfer tune-base {again}")
    print(f"next: mutransfer ui --results {args.results}")
    return 0 if ok else 1


def _add_verify(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, tune-base's and the bracket's trial counts, how many are already "
        "recorded, a bound on the refinement rounds, resources per trial and an estimated cost; run "
        "and write nothing",
    )


def _run_verify(args: argparse.Namespace) -> int:
    from analysis.report import held_out_line, level_text, verdict_table
    from orchestrator.studies.verify import run_verify

    sweep = _load(args)
    if args.dry_run:
        from orchestrator.engine.plan import verify_plan

        print("\n".join(verify_plan(sweep, args.results, args.trials, args.address)))
        print(
            f"next: mutransfer verify {shlex.join([args.space, *args.overrides, '--results', args.results])}   # runs it"
        )
        return 0
    results = Path(args.results).resolve()
    print(f"verify {sweep.name} -> {results / sweep.name}", flush=True)
    res = run_verify(
        sweep,
        args.results,
        trials=args.trials,
        storage=args.storage,
        address=args.address,
        track=not args.no_mlflow,
    )
    print("tune-base (Optuna at the base width):")
    print_base(res.base)
    tr = res.transfer
    if tr is None:
        print("VERDICT: transfer not checked")
        for line in res.failures:
            print(f"  {line}")
        print(
            f"next: look at tune-base's trials: mutransfer status {res.base.sweep_dir}; mutransfer ui --results {args.results}"
        )
        return res.code
    print(
        f"\ntransfer runs: {', '.join(f'{k} {v}' for k, v in res.run_counts.items()) or 'all done before'}; "
        f"{tr.mode} {tr.metric}; transfers when k's {level_text(tr.level)} interval lies within "
        f"+-{tr.max_drift:g}, the excess regret over the base width's has its upper bound <= {tr.max_regret:.0%} "
        f"and no eta* is edge-limited (and the SP control drifts)"
    )
    print(verdict_table(tr).to_string(index=False))
    line = held_out_line(tr)
    if line:
        print(line)
    from analysis.report_setup import advice

    for note in tr.notes:
        print(f"  note: {advice(note)}")  # with what would resolve it, as analyze prints it
    print(f"\nreport: {res.report_dir / 'report.md'} (and report.html, summary.parquet, summary.json)")
    if res.tracking_uri:
        print(
            f"MLflow: {res.tracking_uri}; browse with `mutransfer ui --results {args.results}` (http://127.0.0.1:5000)"
        )
    print(VERDICT_LINES[res.code])
    for line in res.failures:
        print(f"  {line}")
    for line in verify_next_lines(args.results, res.report_dir, res.code):
        print(line)
    return res.code


def verify_next_lines(results: str, report_dir: Path, code: int) -> list[str]:
    """What to look at after verify: the report, the MLflow UI, and what an inconclusive verdict needs."""
    lines = [f"next: open {report_dir / 'report.html'}", f"next: mutransfer ui --results {results}"]
    if code == INCONCLUSIVE_CODE:
        lines.append(
            "next: inconclusive: raise verify.max_seeds (more seeds where undecided) or lower verify.resolution, "
            "then rerun the same verify: it keeps every recorded trial"
        )
    return lines


INCONCLUSIVE_CODE = 3


VERDICT_LINES = {
    0: "VERDICT: transfer holds for every muP group (exit 0)",
    1: "VERDICT: transfer fails: a muP group drifts (exit 1)",
    3: "VERDICT: inconclusive: no muP group drifts, but not every one is shown to transfer (exit 3)",
}


# ---- demo ----------------------------------------------------------------------
DEMO = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results directory (default results)")
    p.add_argument("--no-mlflow", action="store_true", help="Parquet only")


def _run_demo(args: argparse.Namespace) -> int:
    """`mutransfer verify search_spaces/demo.yaml`: BP, PC and TP under SP and muP on embedded Ray."""
    import time

    print(
        f"== demo: verify {DEMO.name}: BP, PC and TP under SP and muP on 7x7 pooled Fashion-MNIST, lr tuned "
        f"at width 64 (Optuna), checked at widths 64-512 with 3 seeds (up to 8 where undecided), on Ray Tune ==",
        flush=True,
    )
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser()
    _add_verify(parser)
    argv = [str(DEMO), "--results", args.results] + (["--no-mlflow"] if args.no_mlflow else [])
    code = _run_verify(parser.parse_args(argv))
    print(
        f"demo finished in {time.perf_counter() - t0:.0f}s; verify's exit code was {code} (0: every μP group "
        "transfers, 1: one drifts, 3: inconclusive); the demo itself exits 0 because it completed"
    )
    return 0 if code in (0, 1, 3) else code


COMMANDS = {
    "tune-base": (
        "Optuna (GP sampler, a seed per group) search of the learning rate at the base width, per group, on Ray Tune; "
        "resumable from its storage (SQLite, PostgreSQL or a journal file); writes RESULTS/NAME/base_lr.json.",
        _add_common,
        _run_tune_base,
    ),
    "verify": (VERIFY_HELP, _add_verify, _run_verify),
    "demo": (
        "The demo: `mutransfer verify search_spaces/demo.yaml` on embedded Ray: BP, PC and TP under SP and "
        "muP, 7x7-pooled Fashion-MNIST, widths 64-512, 3 seeds, quarter-octave optima (about 4 minutes on "
        "2 CPUs). Prints the verdict table, the report and the MLflow UI command; exits 0 when it completed "
        "(the table says what it found).",
        _add_demo,
        _run_demo,
    ),
}
