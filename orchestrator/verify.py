"""verify: tune at the base width, run the base η* and a bracket around it at every width, judge.

For each tune-base group, each width of the grid, each parametrization and seed, the trials are

    lr = η*_base · 2^k,  k ∈ verify.bracket   (default −2, −1, 0, 1, 2)

(other searched keys at their base optimum), run through the sweep path into
``results/<name>/`` and judged by :func:`analysis.transfer.analyze` with the ``verify:``
thresholds. "Transfer holds" when every μP group's verdict is ``transfers``
(|drift exponent| ≤ max_drift and max regret ≤ max_regret); SP groups are the control and are
reported, not judged (SP is expected to drift). With no μP group, every group is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import Sweep, TrialSpec, trial_id
from .errors import BadInput
from .tune_base import BaseResult, group_of, tune_base

JUDGED = "mup"


class NoOptimum(ValueError):
    """tune-base found no finite optimum for a group: the check ran and cannot go on (exit 1)."""


def transfer_trials(sweep: Sweep, base: list[dict[str, Any]], bracket: list[float]) -> list[TrialSpec]:
    """The ground-truth trials: every grid point but lr, with lr = η*_base · 2^k for k in ``bracket``.

    Raises:
        NoOptimum: a group without a finite optimum at the base width.
    """
    out: dict[str, TrialSpec] = {}
    for t in sweep.trials:
        g = group_of(t.trainer, base)
        if g is None or not g["best"]:
            label = ", ".join(f"{k}={t.trainer[k]}" for k in (g["group"] if g else {})) or "all"
            raise NoOptimum(f"tune-base found no finite optimum for group {label} (every trial diverged?): "
                            "widen search.space.lr or add search.trials")
        for k in bracket:
            trainer = {**t.trainer, **g["best"], "lr": float(g["best"]["lr"]) * 2.0 ** float(k)}
            tid = trial_id(trainer, t.data, t.train)
            swept = tuple(dict.fromkeys([*t.swept, "lr", *g["best"]]))
            out.setdefault(tid, TrialSpec(tid, trainer, t.data, t.train, swept))
    return list(out.values())


def decide(groups) -> tuple[int, list[str]]:
    """Exit code from the verdicts: 0 when every judged group (μP, else all) ``transfers``, else 1.

    Returns:
        ``(code, lines)``: one line per judged group that failed.
    """
    if groups.empty:
        return 1, ["no group could be analysed"]
    judged = groups[groups.parametrization == JUDGED] if (groups.parametrization == JUDGED).any() else groups
    bad = judged[judged.verdict != "transfers"]
    lines = [f"{'/'.join(str(r[k]) for k in ('algorithm', 'parametrization', 'inference_steps'))}: "
             f"{r['verdict_reason']}" for _, r in bad.iterrows()]
    return (1 if len(bad) else 0), lines


@dataclass
class VerifyResult:
    """What verify did: tune-base's result, the transfer run, the analysis and the exit code."""

    base: BaseResult
    sweep_dir: Path
    report_dir: Path
    transfer: Any = None
    code: int = 1
    failures: list[str] = field(default_factory=list)
    run_counts: dict[str, int] = field(default_factory=dict)
    tracking_uri: str = ""
    report_run: str | None = None


def run_verify(sweep: Sweep, results_dir: str | Path = "results", trials: int | None = None,
               storage: str | None = None, address: str | None = None, track: bool = True,
               n_boot: int = 200, stream: TextIO | None = None) -> VerifyResult:
    """tune-base, then the bracket at every width through :func:`orchestrator.sweep.run_sweep`, then the report.

    Returns:
        The :class:`VerifyResult` (``code``: 0 transfer holds, 1 it fails).

    Raises:
        BadInput: bad input (before anything is written).
    """
    from analysis.load import LogError, load_sweep
    from analysis.report import log_report, write_report
    from analysis.transfer import analyze

    from .sweep import run_sweep

    bracket = [float(k) for k in sweep.config.verify.bracket]
    if 0.0 not in bracket:
        raise BadInput(f"{sweep.source}: verify.bracket={bracket} must contain 0 (the base η* itself)")
    if "width" not in sweep.swept_keys or len({t.trainer["width"] for t in sweep.trials}) < 2:
        raise BadInput(f"{sweep.source}: grid.width needs at least two widths to verify a transfer")
    base = tune_base(sweep, results_dir, trials=trials, storage=storage, address=address, track=track,
                     stream=stream)
    try:
        specs = transfer_trials(sweep, base.groups, bracket)
    except NoOptimum as exc:
        return VerifyResult(base, base.sweep_dir, base.sweep_dir / "report", None, 1, [str(exc)])
    run = run_sweep(Sweep(sweep.name, sweep.source, sweep.config, specs), results_dir, address=address,
                    track=track, stream=stream)
    try:
        logs = load_sweep(run.sweep_dir)
    except LogError as exc:
        raise BadInput(str(exc)) from None
    result = analyze(logs.trials, metric=logs.objective["metric"], mode=logs.objective["mode"],
                     max_drift=logs.verify["max_drift"], max_regret=logs.verify["max_regret"], n_boot=n_boot)
    out = run.sweep_dir / "report"
    write_report(result, out, logs)
    code, failures = decide(result.groups)
    res = VerifyResult(base, run.sweep_dir, out, result, code, failures, dict(run.counts), run.tracking_uri)
    if track and logs.tracking_uri:
        try:
            res.report_run = log_report(out, logs.tracking_uri, logs.experiment, logs.name)
        except Exception as exc:  # the report is written; MLflow is for looking
            import sys

            sys.stderr.write(f"mutransfer verify: warning: report not logged to MLflow ({exc})\n")
    return res
