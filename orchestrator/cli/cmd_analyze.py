"""`mutransfer analyze results/<sweep>`: the transfer report from a sweep's logs alone;
`mutransfer analyze A B [C ...] --out DIR`: several sweeps, each analysed on its own, side by side
(analysis/compare.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.errors import BadInput


def _add(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Transfer report from a sweep's logs: optimal learning rate per width, drift exponent, regret, verdict, "
        "plots (RESULTS/report/, or --out). Given several sweeps (mutransfer analyze A B [C ...] --out DIR), "
        "each is analysed on its own, as alone, and DIR gets one comparison report: a table with one row per "
        "(sweep, group) (k with its interval, the excess regret, the verdict), the sweep.yaml keys that differ "
        "between the sweeps, the trial ids they share (never merged), and eta* against width with every "
        "sweep's groups (comparison.parquet, comparison.json, lr_star_compare.png), logged as a run of MLflow's "
        "'comparisons' experiment in the first sweep's store (not with --no-mlflow)."
    )
    p.add_argument(
        "results",
        nargs="+",
        help="a sweep's results directory, results/<sweep>; several: compare them (needs --out)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="final_* column that defines optimal (default: the sweep's objective.metric, else final_train_loss)",
    )
    p.add_argument(
        "--mode",
        default=None,
        help="min or max (default: the sweep's objective.mode; with --metric: max for *_acc, min otherwise)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="report directory (default RESULTS/report); with several sweeps, required, outside every sweep "
        "directory, and new, empty or an earlier comparison (it is replaced)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to the sweep's MLflow run")
    p.add_argument("--dpi", type=int, default=None, help="resolution of the PNG figures (default 150)")
    p.add_argument(
        "--formats",
        default="png,svg",
        help="figure formats, comma-separated, any of png, svg, pdf (default png,svg); PNG is always written "
        "(report.html embeds it), so 'pdf' alone gives png and pdf",
    )


FIGURE_FORMATS = ("png", "svg", "pdf")


def figure_options(args: argparse.Namespace) -> tuple[int, tuple[str, ...]]:
    """``(dpi, formats)`` from --dpi and --formats (BadInput naming the option when bad). The formats
    start with png, which the report always writes (report.html embeds the PNGs), then the others given."""
    from analysis.plots import DPI

    dpi = DPI if args.dpi is None else args.dpi
    if not 30 <= dpi <= 1200:
        raise BadInput(f"--dpi={dpi} must be between 30 and 1200")
    formats = tuple(f.strip().lower() for f in str(args.formats).split(",") if f.strip())
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise BadInput(
            f"--formats={args.formats!r}: {'unknown ' + ', '.join(bad) if bad else 'no format'}; give any of "
            f"{', '.join(FIGURE_FORMATS)}, comma-separated (e.g. pdf, or png,svg)"
        )
    return dpi, ("png", *dict.fromkeys(f for f in formats if f != "png"))


def _check_mode(args: argparse.Namespace) -> None:
    from analysis.load import MODES

    if args.mode is not None and args.mode not in MODES:
        raise BadInput(f"--mode={args.mode!r} is not one of {', '.join(MODES)}")


def _analyze(results: str, args: argparse.Namespace):
    """``(logs, result, metric, mode)``: the sweep in ``results`` read and analysed, its objective unless
    --metric/--mode say otherwise (BadInput naming the directory when it is not a readable sweep)."""
    from analysis.load import LogError, load_sweep
    from analysis.transfer import analyze_logs

    try:
        logs = load_sweep(results)
    except LogError as exc:
        raise BadInput(str(exc)) from None
    metric = args.metric or logs.objective["metric"]
    if args.mode is not None:
        mode = args.mode
    elif args.metric is None or args.metric == logs.objective["metric"]:
        mode = logs.objective["mode"]
    else:
        mode = "max" if metric.endswith("_acc") else "min"
    try:
        result = analyze_logs(logs, metric=metric, mode=mode)
    except ValueError as exc:
        raise BadInput(f"{results}: {exc}") from None
    return logs, result, metric, mode


def _run(args: argparse.Namespace) -> int:
    if len(args.results) > 1:
        return _run_compare(args)
    args.results = args.results[0]  # one sweep: a path, as before (main's exit-4 line names it)
    from analysis.load import read_sweep_yaml
    from analysis.report import held_out_line, level_text, verdict_table, write_report
    from analysis.report_setup import advice, conclusions
    from orchestrator.stores.tracking import log_report

    results = args.results
    dpi, formats = figure_options(args)
    _check_mode(args)
    if args.out:
        out = Path(args.out)  # the user's choice of place
    else:  # the default lies in the sweep's directory, even where report/ is a symbolic link
        from orchestrator.stores.paths import inside

        out = Path(results) / "report"
        inside(out, results, "report directory")
    from analysis.compare import MARKER

    if (out / MARKER).is_file():  # a comparison of several sweeps is not replaced by one sweep's report
        raise BadInput(
            f"--out {out}: holds a comparison of several sweeps ({MARKER}); compare two sweeps or more "
            "(mutransfer analyze A B --out DIR), or give another --out"
        )
    logs, result, metric, mode = _analyze(results, args)
    from orchestrator.studies.base_plots import base_figures

    write_report(
        result,
        out,
        logs,
        dpi=dpi,
        formats=formats,
        figures=base_figures(results, dpi),
        sweep_cfg=read_sweep_yaml(results),
    )
    print(
        f"{logs.name}: {len(logs.trials)} trials from {logs.source}; {mode} {metric}; "
        f"transfers when k's {level_text(result.level)} interval lies within +-{result.max_drift:g} and the "
        f"upper bound of the excess regret over the base width's is <= {result.max_regret:.0%} (and, for muP, "
        f"the SP control drifts); drifts when k's interval lies outside or the excess regret's lower bound is "
        f"above; else inconclusive (an edge-limited eta* never transfers)"
    )
    print(verdict_table(result).to_string(index=False))
    line = held_out_line(result)
    if line:
        print(line)
    for note in result.notes + logs.notes:
        print(f"  note: {advice(note)}")
    print(conclusions(result)[0])
    print(f"report: {out / 'report.md'} (and report.html, summary.parquet, summary.json)")
    if not args.no_mlflow and logs.tracking_uri:
        try:
            run_id = log_report(out, logs.tracking_uri, logs.experiment, logs.name)
        except Exception as exc:  # the report is written; MLflow is for looking
            sys.stderr.write(f"mutransfer analyze: warning: report not logged to MLflow ({exc})\n")
        else:
            where = f"run {run_id}" if run_id else "nowhere (no sweep run found)"
            print(f"MLflow ({logs.tracking_uri}, experiment {logs.experiment!r}): report logged to {where}")
    return 0


def _check_compare_paths(results: list[str], out: str | None) -> list[Path]:
    """The sweep directories, resolved; BadInput (one line naming the path) when --out is missing, lies
    inside a sweep directory or holds one, exists and is not an earlier comparison, or a directory is given
    twice."""
    from analysis.compare import MARKER

    if not out:
        raise BadInput(f"--out is required with several sweeps ({' '.join(results)}): give a new directory")
    out_r = Path(out).resolve()
    paths: list[Path] = []
    for r in results:
        p = Path(r).resolve()
        if p in paths:
            raise BadInput(f"{r}: given twice; a comparison needs two different sweeps or more")
        if out_r == p or p in out_r.parents:
            raise BadInput(f"--out {out}: lies inside the sweep directory {r}; give a directory outside every sweep")
        if out_r in p.parents:
            raise BadInput(f"--out {out}: holds the sweep directory {r} (it would be replaced); give another directory")
        paths.append(p)
    if out_r.exists() and (not out_r.is_dir() or (any(out_r.iterdir()) and not (out_r / MARKER).is_file())):
        raise BadInput(
            f"--out {out}: exists and is not an earlier comparison (no {MARKER}); give a new or empty directory"
        )
    return paths


def _run_compare(args: argparse.Namespace) -> int:
    """Several sweeps: each analysed as alone, then one comparison report in --out; nothing written
    until every sweep has been read and analysed."""
    from analysis.compare import (
        comparison_table,
        display_table,
        labels,
        overlap_text,
        setup_differences,
        sweep_analysis,
        verdict_changes,
        write_comparison,
    )

    dpi, formats = figure_options(args)
    _check_mode(args)
    _check_compare_paths(args.results, args.out)
    analysed = [_analyze(r, args) for r in args.results]
    names = labels([logs.name for logs, *_ in analysed], [Path(r) for r in args.results])
    sweeps = [
        sweep_analysis(r, logs, result, label) for r, (logs, result, *_), label in zip(args.results, analysed, names)
    ]
    out = write_comparison(sweeps, args.out, dpi=dpi, formats=formats)
    table = comparison_table(sweeps)
    for s in sweeps:
        print(
            f"{s.label}: {len(s.logs.trials)} trials from {s.path} ({s.logs.source}); {s.result.mode} {s.result.metric}"
        )
    print(display_table(table).to_string(index=False))
    diffs = setup_differences(sweeps)
    setup = diffs[diffs.kind == "setup"].key.tolist()
    run_only = diffs[diffs.kind != "setup"].key.tolist()
    print(
        "setup differences: "
        + (", ".join(setup) if setup else "none")
        + (f" (and, run only: {', '.join(run_only)})" if run_only else "")
    )
    print(overlap_text(sweeps))
    for line in verdict_changes(table):
        print(f"  verdict differs: {line}")
    print(f"report: {out / 'report.md'} (and report.html, comparison.parquet, comparison.json)")
    uri = next((logs.tracking_uri for logs, *_ in analysed if logs.tracking_uri), None)
    if not args.no_mlflow and uri:
        from orchestrator.stores.tracking import COMPARISONS, log_comparison

        run_id = log_comparison(out, uri, [str(s.path) for s in sweeps])
        if run_id:
            print(f"MLflow ({uri}, experiment {COMPARISONS!r}): comparison logged to run {run_id}")
    print(f"next: open {out / 'report.html'}")
    for s in sweeps:
        print(f"next: mutransfer analyze {s.path}   # {s.label}'s own report: every width, plots, notes")
    return 0


COMMANDS = {
    "analyze": (
        "Transfer report from a sweep's logs: optimal learning rate per width, drift exponent, regret, verdict, "
        "plots; several sweeps (A B ... --out DIR): one report comparing them.",
        _add,
        _run,
    ),
}
