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


def transfer_trials(sweep: Sweep, base: list[dict[str, Any]], bracket: list[float],
                    extra: dict[int, set[float]] | None = None) -> list[TrialSpec]:
    """The ground-truth trials: every grid point but lr, with lr = η*_base · 2^k for k in ``bracket``.

    ``extra`` maps the index of a grid point (in ``sweep.trials``) to more offsets k for it alone.

    Raises:
        NoOptimum: a group without a finite optimum at the base width.
    """
    out: dict[str, TrialSpec] = {}
    for i, t in enumerate(sweep.trials):
        g = group_of(t.trainer, base)
        if g is None or not g["best"]:
            label = ", ".join(f"{k}={t.trainer[k]}" for k in (g["group"] if g else {})) or "all"
            raise NoOptimum(f"tune-base found no finite optimum for group {label} (every trial diverged?): "
                            "widen search.space.lr or add search.trials")
        for k in sorted(set(bracket) | (extra or {}).get(i, set())):
            trainer = {**t.trainer, **g["best"], "lr": float(g["best"]["lr"]) * 2.0 ** float(k)}
            tid = trial_id(trainer, t.data, t.train)
            swept = tuple(dict.fromkeys([*t.swept, "lr", *g["best"]]))
            out.setdefault(tid, TrialSpec(tid, trainer, t.data, t.train, swept))
    return list(out.values())


def edge_extensions(sweep: Sweep, base: list[dict[str, Any]], trials, ks: dict[int, set[float]],
                    step: float, metric: str, mode: str, max_extend: int) -> dict[int, set[float]]:
    """New offsets for grid points whose best lr sits at an end of their bracket.

    For grid point i with offsets ``ks[i]`` (lr = η*_base · 2^k): if its best finite
    ``metric`` is at the lowest k, add k_min − ``step``; at the highest k (which did not
    diverge), add k_max + ``step``; never past ``max_extend`` spacings beyond ``bracket``'s
    ends. Without this the ground truth cannot see an optimum that moved further than the
    bracket (SP's drift at large widths), and the drift exponent would be bounded by it.
    """
    import math

    import numpy as np

    lo0, hi0 = min(ks[0]) if ks else 0.0, max(ks[0]) if ks else 0.0
    new: dict[int, set[float]] = {}
    sign = 1.0 if mode == "min" else -1.0
    for i, t in enumerate(sweep.trials):
        g = group_of(t.trainer, base)
        if g is None or not g["best"] or trials.empty:
            continue
        rows = trials
        for key in t.swept:
            if key != "lr" and key in rows.columns:
                rows = rows[rows[key] == t.trainer[key]]
        if rows.empty:
            continue
        k = np.round(np.log2(rows.lr.to_numpy(float) / float(g["best"]["lr"])), 6)
        value = rows[metric].to_numpy(float) * sign
        bad = (rows.status != "ok").to_numpy() | ~np.isfinite(value)
        if bad.all():
            continue
        value = np.where(bad, math.inf, value)
        best_k, k_min, k_max = k[int(np.argmin(value))], k.min(), k.max()
        if best_k == k_min and k_min - step >= lo0 - max_extend * step - 1e-9:
            new.setdefault(i, set()).add(float(k_min - step))
        if best_k == k_max and not bad[int(np.argmax(k))] and k_max + step <= hi0 + max_extend * step + 1e-9:
            new.setdefault(i, set()).add(float(k_max + step))
    return new


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
    step = min((b - a for a, b in zip(sorted(bracket), sorted(bracket)[1:])), default=1.0)
    extra: dict[int, set[float]] = {i: set() for i in range(len(sweep.trials))}
    from .results_store import ResultsStore

    metric = sweep.config.objective.metric
    counts: dict[str, int] = {}
    for _ in range(int(sweep.config.verify.max_extend) + 1):
        run = run_sweep(Sweep(sweep.name, sweep.source, sweep.config, specs), results_dir, address=address,
                        track=track, stream=stream)
        for status, n in run.counts.items():  # this round's trials (the sweep skips those already done)
            counts[status] = counts.get(status, 0) + n
        ks = {i: set(bracket) | extra[i] for i in extra}
        more = edge_extensions(sweep, base.groups, ResultsStore(run.sweep_dir).trials(), ks, step, metric,
                               sweep.config.objective.mode, int(sweep.config.verify.max_extend))
        more = {i: v - ks[i] for i, v in more.items() if v - ks[i]}
        if not more:
            break
        for i, v in more.items():
            extra[i] |= v
        import sys

        (stream or sys.stdout).write(f"bracket extended by one step at {len(more)} grid point(s) "
                                     "whose best lr was at an end of the bracket\n")
        specs = transfer_trials(sweep, base.groups, bracket, extra)
    try:
        logs = load_sweep(run.sweep_dir)
    except LogError as exc:
        raise BadInput(str(exc)) from None
    result = analyze(logs.trials, metric=logs.objective["metric"], mode=logs.objective["mode"],
                     max_drift=logs.verify["max_drift"], max_regret=logs.verify["max_regret"], n_boot=n_boot)
    out = run.sweep_dir / "report"
    write_report(result, out, logs)
    code, failures = decide(result.groups)
    res = VerifyResult(base, run.sweep_dir, out, result, code, failures, counts, run.tracking_uri)
    if track and logs.tracking_uri:
        try:
            res.report_run = log_report(out, logs.tracking_uri, logs.experiment, logs.name)
        except Exception as exc:  # the report is written; MLflow is for looking
            import sys

            sys.stderr.write(f"mutransfer verify: warning: report not logged to MLflow ({exc})\n")
    return res
