"""`mutransfer analyze results/<sweep>`: the transfer report from a sweep's logs alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.errors import BadInput


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="a sweep's results directory, results/<sweep>")
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
    p.add_argument("--out", default=None, help="report directory (default RESULTS/report)")
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


def _run(args: argparse.Namespace) -> int:
    from analysis.load import MODES, LogError, load_sweep, read_sweep_yaml
    from analysis.report import held_out_line, level_text, verdict_table, write_report
    from analysis.report_setup import advice, conclusions
    from analysis.transfer import analyze_logs
    from orchestrator.stores.tracking import log_report

    dpi, formats = figure_options(args)
    if args.mode is not None and args.mode not in MODES:
        raise BadInput(f"--mode={args.mode!r} is not one of {', '.join(MODES)}")
    if args.out:
        out = Path(args.out)  # the user's choice of place
    else:  # the default lies in the sweep's directory, even where report/ is a symbolic link
        from orchestrator.stores.paths import inside

        out = Path(args.results) / "report"
        inside(out, args.results, "report directory")
    try:
        logs = load_sweep(args.results)
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
        raise BadInput(f"{args.results}: {exc}") from None
    from orchestrator.studies.base_plots import base_figures

    write_report(
        result,
        out,
        logs,
        dpi=dpi,
        formats=formats,
        figures=base_figures(args.results, dpi),
        sweep_cfg=read_sweep_yaml(args.results),
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


COMMANDS = {
    "analyze": (
        "Transfer report from a sweep's logs: optimal learning rate per width, drift exponent, regret, verdict, plots.",
        _add,
        _run,
    ),
}
