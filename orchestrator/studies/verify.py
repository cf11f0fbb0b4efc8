"""verify: tune at the base width, run the base η* and a bracket around it at every width, judge.

For each tune-base group, each width of the grid, each parametrization and seed (grid.seed,
else ``verify.seeds`` seeds 0, 1, ...), the trials are

    lr = η*_base · 2^k,  k ∈ verify.bracket   (default −2, −1, 0, 1, 2)

(other searched keys at their base optimum), run through the sweep path into
``results/<name>/``. Then, round after round, each (group, width, seed) curve is extended
where its best point is at an end, and refined by halving the spacing around its best point
and between its last stable and first diverged point, down to ``verify.resolution`` octaves
(:mod:`orchestrator.studies.refine`). :func:`analysis.transfer.analyze` judges the result with the
``verify:`` thresholds (:mod:`analysis.verdict`): each μP group ``transfers``, ``drifts`` or is
``inconclusive``, and transfers only if its SP control drifts. Exit code: 0 every μP group
transfers, 1 one drifts, 3 none drifts but one is inconclusive (2 is bad input). With no μP
group, every group is judged. Groups still undecided then get more seeds, look after look, up to
``verify.max_seeds`` (:mod:`orchestrator.studies.seeding`), through the same bracket and refinement.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from analysis.schema import GROUP_KEYS
from analysis.transfer import tidy
from orchestrator.engine.session import Stage, open_session
from orchestrator.errors import BadInput
from orchestrator.spec.config import Sweep, TrialSpec, expand, trial_id
from orchestrator.spec.validate import check_verify_run
from orchestrator.stores.tracking import log_report
from orchestrator.studies.refine import next_offsets
from orchestrator.studies.seeding import at_seeds, grow, look_line, seed_plan, undecided
from orchestrator.studies.sweep import check_stores, finish_sweep, sweep_stage
from orchestrator.studies.tune_base import BaseResult, group_of, tune_base

JUDGED = "mup"
TRANSFERS, DRIFTS, INCONCLUSIVE = 0, 1, 3  # verify's exit codes (2 is bad input)


class NoOptimum(ValueError):
    """tune-base found no finite optimum for a group: the check ran and cannot go on (exit 1)."""


def with_seeds(sweep: Sweep) -> Sweep:
    """``sweep`` with ``grid.seed = [0 .. verify.seeds − 1]`` when its grid has no seed axis; with one,
    ``verify.seeds`` is set to its number of seeds (what the looks and their level count from)."""
    if "seed" in sweep.swept_keys:
        n = len({t.trainer["seed"] for t in sweep.trials})
        if n == int(sweep.config.verify.seeds):
            return sweep
        cfg = sweep.config.copy()
        cfg.verify.seeds, cfg.verify.max_seeds = n, max(n, int(cfg.verify.max_seeds))
        return Sweep(sweep.name, sweep.source, cfg, sweep.trials)
    if int(sweep.config.verify.seeds) <= 1:
        return sweep
    cfg = sweep.config.copy()
    cfg.grid.seed = list(range(int(sweep.config.verify.seeds)))
    return Sweep(sweep.name, sweep.source, cfg, expand(cfg, sweep.source))


def transfer_trials(sweep: Sweep, base: list[dict[str, Any]], offsets: dict[int, set[float]]) -> list[TrialSpec]:
    """The ground-truth trials: grid point i at lr = η*_base · 2^k for each k in ``offsets[i]``.

    Raises:
        NoOptimum: a group without a finite optimum at the base width.
    """
    out: dict[str, TrialSpec] = {}
    for i, t in enumerate(sweep.trials):
        g = group_of(t.trainer, base)
        if g is None or not g["best"]:
            label = ", ".join(f"{k}={t.trainer[k]}" for k in (g["group"] if g else {})) or "all"
            raise NoOptimum(
                f"tune-base found no finite optimum for group {label} (every trial diverged?): "
                "widen search.space.lr or add search.trials"
            )
        for k in sorted(offsets.get(i, ())):
            trainer = {**t.trainer, **g["best"], "lr": float(g["best"]["lr"]) * 2.0 ** float(k)}
            tid = trial_id(trainer, t.data, t.train)
            swept = tuple(dict.fromkeys([*t.swept, "lr", *g["best"]]))
            out.setdefault(tid, TrialSpec(tid, trainer, t.data, t.train, swept))
    return list(out.values())


def curve_of(t: TrialSpec, base_lr: float, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Grid point ``t``'s measured curve: offsets k = log2(lr / η*_base) and the loss (+inf: diverged).

    ``table`` is :func:`analysis.transfer.tidy`'s (failed trials left out, ``loss`` to minimise);
    a swept key with one value is not a column there and needs no filter. The seed always filters:
    the trials of seeds added later (:mod:`orchestrator.studies.seeding`) are not this point's.
    """
    rows = table
    for key in dict.fromkeys([*t.swept, "seed"]):
        if key != "lr" and key in rows.columns:
            rows = rows[rows[key] == t.trainer[key]]
    return np.round(rows.log2_lr.to_numpy(float) - np.log2(base_lr), 6), rows.loss.to_numpy(float)


def refinements(
    sweep: Sweep, base: list[dict[str, Any]], trials: pd.DataFrame, offsets: dict[int, set[float]]
) -> dict[int, set[float]]:
    """The offsets each grid point needs next (extension, sub-octave refinement, stability edge)."""
    v, obj = sweep.config.verify, sweep.config.objective
    bracket = sorted(float(k) for k in v.bracket)
    step = min((b - a for a, b in zip(bracket, bracket[1:])), default=1.0)
    limits = (bracket[0] - int(v.max_extend) * step, bracket[-1] + int(v.max_extend) * step)
    more: dict[int, set[float]] = {}
    if trials.empty:
        return more
    table = tidy(trials, obj.metric, obj.mode)[0]
    for i, t in enumerate(sweep.trials):
        g = group_of(t.trainer, base)
        if g is None or not g["best"]:
            continue
        k, loss = curve_of(t, float(g["best"]["lr"]), table)
        new = next_offsets(k, loss, float(v.resolution), step, limits, bool(v.find_edge)) - offsets.get(i, set())
        if new:
            more[i] = new
    return more


def max_rounds(v) -> int:
    """Rounds of verify: the bracket, its extensions, and the halvings down to ``resolution``."""
    from orchestrator.engine.priors import halvings

    return 1 + int(v.max_extend) + halvings(float(v.resolution)) + 2


def decide(groups, keys: list[str] | None = None) -> tuple[int, list[str]]:
    """Exit code from the judged groups (μP, else all): 1 if one ``drifts``, else 3 if one is
    ``inconclusive``, else 0 (every one ``transfers``).

    Args:
        groups: the analysis's groups (``TransferResult.groups``).
        keys: the group keys that name a group in the lines (default: algorithm, parametrization, T).

    Returns:
        ``(code, lines)``: one line per judged group that did not transfer.
    """
    if groups.empty:
        return INCONCLUSIVE, ["no group could be analysed"]
    judged = groups[groups.parametrization == JUDGED] if (groups.parametrization == JUDGED).any() else groups
    bad = judged[judged.verdict != "transfers"]
    keys = keys or [k for k in GROUP_KEYS if k in groups.columns]
    lines = [f"{'/'.join(str(r[k]) for k in keys)}: {r['verdict']}: {r['verdict_reason']}" for _, r in bad.iterrows()]
    if (judged.verdict == "drifts").any():
        return DRIFTS, lines
    return (INCONCLUSIVE if len(bad) else TRANSFERS), lines


def _measure(
    sweep: Sweep,
    base: list[dict[str, Any]],
    offsets: dict[int, set[float]],
    specs: list[TrialSpec],
    stage: Stage,
    stream: TextIO | None,
) -> None:
    """Run the bracket, then round after round of :func:`refinements`, through ``stage`` (one session,
    one results store: no checks, tracker syncs or compaction between rounds)."""
    out = stream or sys.stdout
    for round_ in range(1, max_rounds(sweep.config.verify) + 1):
        stage.run(specs)  # the stage skips those already done
        more = refinements(sweep, base, stage.store.trials(), offsets)
        if not more:
            break
        for i, v in more.items():
            offsets[i] |= v
        out.write(
            f"refine (round {round_}): {sum(map(len, more.values()))} more learning rate(s) at "
            f"{len(more)} of {len(sweep.trials)} (group, width, seed) points, towards "
            f"{float(sweep.config.verify.resolution):g}-octave spacing around η* and the stability edge\n"
        )
        out.flush()
        specs = transfer_trials(sweep, base, offsets)


def _looks(sweep: Sweep, base: list[dict[str, Any]], stage: Stage, stream: TextIO | None):
    """Analyse at each look of the seed schedule; give the groups still undecided the next seeds
    (:mod:`orchestrator.studies.seeding`) through :func:`_measure`, until none is or the schedule ends.

    Each look analyses only the trials of its own seeds.

    Returns:
        ``(the last look's analysis, the logs it analysed)``.
    """
    from analysis.load import LogError, load_sweep
    from analysis.transfer import analyze_logs

    values, looks = seed_plan(sweep)
    bracket = {float(k) for k in sweep.config.verify.bracket}
    given: dict[tuple, set[int]] = {}
    out = stream or sys.stdout
    for look in range(len(looks)):
        try:
            logs = at_seeds(load_sweep(stage.store.dir), values[: looks[look]])
        except LogError as exc:
            raise BadInput(str(exc)) from None
        result = analyze_logs(logs)
        todo = undecided(result.groups, result.keys)
        if look + 1 == len(looks) or todo.empty:
            break
        points = grow(sweep, todo, result.keys, values[: looks[look + 1]], given)
        batch = values[looks[look] : looks[look + 1]]
        out.write(look_line(todo, result.groups, result.keys, batch, look + 2, len(looks)) + "\n")
        out.flush()
        if points:
            sub = Sweep(sweep.name, sweep.source, sweep.config, points)
            offsets = {i: set(bracket) for i in range(len(points))}
            _measure(sub, base, offsets, transfer_trials(sub, base, offsets), stage, stream)
    return result, logs


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


def run_verify(
    sweep: Sweep,
    results_dir: str | Path = "results",
    trials: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    track: bool = True,
    stream: TextIO | None = None,
) -> VerifyResult:
    """tune-base, then the bracket at every width, then the report: one session (checks, lock, Ray) for all.

    Returns:
        The :class:`VerifyResult` (``code``: 0 transfer holds, 1 it fails).

    Raises:
        BadInput: bad input (before anything is written).
    """
    from analysis.report import write_report

    bracket = check_verify_run(sweep.config, (t.trainer["width"] for t in sweep.trials), sweep.source)
    sweep = with_seeds(sweep)
    check_stores(sweep, results_dir)
    with open_session(sweep, results_dir, address, "mutransfer verify") as session:
        base = tune_base(
            sweep, results_dir, trials=trials, storage=storage, address=address, track=track, stream=stream
        )
        offsets = {i: set(bracket) for i in range(len(sweep.trials))}
        try:
            specs = transfer_trials(sweep, base.groups, offsets)
        except NoOptimum as exc:
            return VerifyResult(base, base.sweep_dir, base.sweep_dir / "report", None, 1, [str(exc)])
        with sweep_stage(session, sweep, track, stream, specs=specs) as stage:
            _measure(sweep, base.groups, offsets, specs, stage, stream)
            result, logs = _looks(sweep, base.groups, stage, stream)
        run = finish_sweep(stage, sweep, len(stage.specs))
        counts = dict(stage.counts)
    out = run.sweep_dir / "report"
    from orchestrator.studies.base_plots import base_figures

    write_report(result, out, logs, figures=base_figures(run.sweep_dir))
    code, failures = decide(result.groups, result.keys)
    res = VerifyResult(base, run.sweep_dir, out, result, code, failures, counts, run.tracking_uri)
    if track and logs.tracking_uri:
        try:
            res.report_run = log_report(out, logs.tracking_uri, logs.experiment, logs.name)
        except Exception as exc:  # the report is written; MLflow is for looking
            sys.stderr.write(f"mutransfer verify: warning: report not logged to MLflow ({exc})\n")
    return res
