"""``--dry-run``: what a sweep or a verify would run and roughly what it would cost; runs and writes nothing.

The plan holds the trial counts per grid axis and in total, how many of those trials the results
directory already holds as done (read through :class:`ResultsStore`), the resources per trial, and
an **estimate** of the cost in trial-seconds (training seconds, summed over trials): per kind of
trial (its trainer config without lr, seed and parametrization, which do not change its cost), the
median ``wall_s`` of such trials recorded ``ok`` on this machine, else a calibration: a few steps and
one evaluation of that trial, timed in this process and scaled to its epochs.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .config import Sweep, TrialSpec
from .progress import duration
from .results_store import ResultsStore

FREE_KEYS = ("lr", "seed", "parametrization")  # cost the same whatever their value
CALIBRATION_STEPS = 3


def cost_key(trainer: dict[str, Any]) -> tuple:
    """What decides a trial's cost: its trainer config without lr, seed and parametrization."""
    return tuple(sorted((k, str(v)) for k, v in trainer.items() if k not in FREE_KEYS))


def axis_counts(sweep: Sweep) -> list[tuple[str, int]]:
    """``(grid key, number of distinct values)`` in the grid's order."""
    return [(k, len({str(t.trainer[k]) for t in sweep.trials})) for k in sweep.swept_keys]


@dataclass
class CostModel:
    """Seconds per trial by :func:`cost_key`, from recorded trials of this machine, else calibration."""

    recorded: list[pd.DataFrame] = field(default_factory=list)
    calibrate: bool = True
    threads: int = 1
    seconds: dict[tuple, float] = field(default_factory=dict)
    source: dict[tuple, str] = field(default_factory=dict)
    _data: dict[str, Any] = field(default_factory=dict)

    def _from_records(self, spec: TrialSpec) -> list[float]:
        host = socket.gethostname()
        out: list[float] = []
        for table in self.recorded:
            if table.empty or "wall_s" not in table.columns:
                continue
            rows = table[(table.status == "ok") & (table.get("hostname", host) == host)]
            for key, value in spec.trainer.items():  # a column the table has must match; others are fixed there
                if key not in FREE_KEYS and key in rows.columns:
                    rows = rows[rows[key].astype(str) == str(value)]
            out += [float(v) for v in rows.wall_s if math.isfinite(float(v))]
        return out

    def _calibrate(self, spec: TrialSpec) -> float:
        """Time a few steps and one evaluation of ``spec``'s trial here; scale to its epochs."""
        import torch

        from trainers import load_dataset, make_trainer

        tc = spec.config
        tc = tc.replace(device="cpu" if tc.device == "auto" else tc.device)
        d = spec.data
        key = f"{d['dataset']}:{d['subset']}:{d['test_subset']}:{tc.device}:{tc.dtype}"
        if key not in self._data:
            self._data[key] = load_dataset(
                d["dataset"], d["subset"], d["test_subset"], tc.torch_device, tc.torch_dtype, tc.seed
            )
        data = self._data[key]
        torch.manual_seed(tc.seed)
        trainer = make_trainer(tc, data.input_dim, data.output_dim)
        n, bs = data.x_train.shape[0], min(int(spec.train["batch_size"]), data.x_train.shape[0])
        xb, yb = data.x_train[:bs], data.y_train[:bs]
        trainer.step(xb, yb)  # warm-up
        t0 = time.perf_counter()
        for _ in range(CALIBRATION_STEPS):
            trainer.step(xb, yb)
        per_step = (time.perf_counter() - t0) / CALIBRATION_STEPS
        t0 = time.perf_counter()
        trainer.evaluate(data.x_test, data.y_test)
        per_eval = time.perf_counter() - t0
        return int(spec.train["epochs"]) * ((n // bs) * per_step + per_eval)

    def trial_seconds(self, spec: TrialSpec) -> float | None:
        """Estimated training seconds of ``spec`` (None when unknown and calibration is off)."""
        key = cost_key(spec.trainer)
        if key not in self.seconds:
            recorded = self._from_records(spec)
            if recorded:
                self.seconds[key], self.source[key] = statistics.median(recorded), "recorded"
            elif self.calibrate:
                import torch

                before = torch.get_num_threads()
                torch.set_num_threads(self.threads)  # as a trial does: one thread per CPU it was given
                try:
                    self.seconds[key], self.source[key] = self._calibrate(spec), "calibrated"
                finally:
                    torch.set_num_threads(before)
            else:
                return None
        return self.seconds[key]

    def total(self, specs: list[TrialSpec]) -> float | None:
        """Estimated trial-seconds of ``specs`` (None when one is unknown)."""
        secs = [self.trial_seconds(s) for s in specs]
        return None if any(s is None for s in secs) else float(sum(secs))

    def basis(self) -> str:
        """Where the estimate came from: how many kinds of trial were recorded, how many calibrated."""
        rec = sum(v == "recorded" for v in self.source.values())
        cal = sum(v == "calibrated" for v in self.source.values())
        parts = []
        if rec:
            parts.append(
                f"{rec} kind(s) of trial from the median wall_s of trials recorded ok on this machine "
                f"({socket.gethostname()})"
            )
        if cal:
            parts.append(
                f"{cal} kind(s) calibrated here ({CALIBRATION_STEPS} steps and one evaluation each, "
                "scaled to the epochs; a diverged trial stops early, so this errs high)"
            )
        return ("; ".join(parts) or "nothing to estimate") + (
            ". Trial-seconds count training only (wall_s): Ray's start and each trial's start-up come on top"
        )


def recorded_done(store: ResultsStore, specs: list[TrialSpec]) -> int:
    """How many of ``specs`` the store holds as done (ok or diverged)."""
    done = store.done_ids()
    return sum(s.trial_id in done for s in specs)


def slots(sweep: Sweep, address: str | None, max_concurrent: int | None = None) -> int | None:
    """Trials at once on embedded Ray (CPUs here / CPUs per trial, capped by max_concurrent); None on a cluster."""
    from .driver import embedded

    if not embedded(address):
        return None
    cpu = float(sweep.config.resources.cpu)
    n = int((os.cpu_count() or 1) // cpu) if cpu > 0 else (os.cpu_count() or 1)
    cap = sweep.config.max_concurrent if max_concurrent is None else max_concurrent
    return max(1, min(n, cap) if cap else n)


def cost_line(label: str, seconds: float | None, n_slots: int | None) -> str:
    """``label: ~S trial-seconds (~W wall on N slots)``, or that it is unknown."""
    if seconds is None:
        return f"{label}: unknown (no recorded trials of this kind here; calibration off)"
    wall = (
        f", ~{duration(seconds / n_slots)} wall on {n_slots} slot(s) here"
        if n_slots
        else " (wall time depends on the cluster's free slots)"
    )
    return f"{label}: ~{seconds:.0f} trial-seconds ({duration(seconds)}{wall})"


def resources_line(sweep: Sweep, address: str | None, n_slots: int | None) -> str:
    """Resources per trial and how many trials run at once here."""
    r = sweep.config.resources
    where = (
        f"embedded Ray on this machine ({os.cpu_count()} CPUs): {n_slots} trial(s) at once"
        if n_slots
        else f"cluster {address}: as many at once as its free resources allow"
    )
    return f"resources per trial: cpu {float(r.cpu):g}, gpu {float(r.gpu):g}; {where}"


# ---- the plans -------------------------------------------------------------------------
def _header(sweep: Sweep) -> list[str]:
    from .config import to_yaml

    return [
        f"# dry run of {sweep.source}: nothing is run or written",
        "# the resolved config:",
        to_yaml(sweep).rstrip(),
        "# the plan:",
    ]


def _axes_line(sweep: Sweep) -> str:
    axes = axis_counts(sweep)
    return f"trials: {' x '.join(f'{k} {n}' for k, n in axes)} = {len(sweep.trials)}"


def sweep_plan(
    sweep: Sweep, results_dir, address: str | None = None, max_concurrent: int | None = None, calibrate: bool = True
) -> list[str]:
    """The dry-run lines of ``mutransfer sweep``: config, counts, recorded, resources, estimated cost.

    Raises:
        BadInput: whatever the real run would refuse before writing (a different sweep in the
            directory, a corrupt table, no trainer or dataset, an unreachable address).
    """
    from .config import check_runnable
    from .driver import preflight

    results_dir = preflight(sweep, results_dir, address)
    store = ResultsStore(results_dir / sweep.name)
    store.check_owner(sweep.identity())
    check_runnable(sweep)
    done = store.done_ids()
    todo = [t for t in sweep.trials if t.trial_id not in done]
    n_slots = slots(sweep, address, max_concurrent)
    model = CostModel([store.trials()], calibrate, max(1, int(float(sweep.config.resources.cpu))))
    lines = _header(sweep) + [
        _axes_line(sweep),
        f"already recorded (ok or diverged) in {store.dir}: {len(sweep.trials) - len(todo)}; to run: {len(todo)}",
        resources_line(sweep, address, n_slots),
        cost_line("estimated cost of the trials to run", model.total(todo), n_slots),
        f"estimate from: {model.basis()}",
    ]
    return lines


def _representative(space: list[dict[str, Any]]) -> dict[str, Any]:
    """One value per searched key, for counting and costing (lr: any; others: the middle of their range)."""
    out: dict[str, Any] = {}
    for p in space:
        if "choices" in p:
            out[p["name"]] = p["choices"][len(p["choices"]) // 2]
        elif p["log"]:
            mid = math.sqrt(p["low"] * p["high"])
            out[p["name"]] = round(mid) if p["type"] == "int" else mid
        else:
            mid = (p["low"] + p["high"]) / 2
            out[p["name"]] = round(mid) if p["type"] == "int" else mid
    return out


def _known_base(path) -> list[dict[str, Any]] | None:
    """tune-base's groups from an earlier run's base_lr.json (None when absent or unreadable)."""
    import json

    try:
        groups = json.loads(path.read_text())["groups"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return groups if all(g.get("best") for g in groups) else None


def _seeding_line(sweep: Sweep, points: int, per_point: int) -> str:
    """The bound on adaptive seeding: every group undecided at every look, each new point at its worst."""
    from .seeding import seed_plan

    v = sweep.config.verify
    _, looks = seed_plan(sweep)
    extra = (looks[-1] - looks[0]) * (points // looks[0])
    if not extra:
        return f"adaptive seeding: none (verify.max_seeds {int(v.max_seeds)} <= {looks[0]} seeds)"
    return (
        f"adaptive seeding: undecided groups may get up to {looks[-1] - looks[0]} more seeds (looks at "
        f"{', '.join(map(str, looks))} seeds; verify.max_seeds, seed_step): at most {extra * per_point} more "
        f"trials ({extra} points x {per_point})"
    )


def verify_plan(
    sweep: Sweep, results_dir, trials: int | None = None, address: str | None = None, calibrate: bool = True
) -> list[str]:
    """The dry-run lines of ``mutransfer verify``: tune-base's trials, the bracket, a bound on refinement.

    Raises:
        BadInput: what verify would refuse before writing.
    """
    from .config import check_runnable
    from .driver import preflight
    from .errors import BadInput
    from .tune_base import search_groups, search_space
    from .verify import max_rounds, transfer_trials, with_seeds

    v = sweep.config.verify
    if 0.0 not in [float(k) for k in v.bracket]:
        raise BadInput(f"{sweep.source}: verify.bracket={list(v.bracket)} must contain 0 (the base η* itself)")
    if "width" not in sweep.swept_keys or len({t.trainer["width"] for t in sweep.trials}) < 2:
        raise BadInput(f"{sweep.source}: grid.width needs at least two widths to verify a transfer")
    n = sweep.config.search.trials if trials is None else trials
    if not isinstance(n, int) or n <= 0:
        raise BadInput(f"{sweep.source}: search.trials={n!r} must be a positive integer")
    seeds_from = "grid.seed" if "seed" in sweep.swept_keys else "verify.seeds"
    sweep = with_seeds(sweep)
    space = search_space(sweep)
    groups = search_groups(sweep, space)
    results_dir = preflight(sweep, results_dir, address)
    check_runnable(sweep)
    store, base_store = ResultsStore(results_dir / sweep.name), ResultsStore(results_dir / sweep.name / "base")
    n_slots = slots(sweep, address)
    model = CostModel([store.trials(), base_store.trials()], calibrate, max(1, int(float(sweep.config.resources.cpu))))
    rep = _representative(space)
    from .config import searched_spec

    base_specs = [
        TrialSpec(**{**s, "swept": tuple(s["swept"])}) for g in groups for s in [searched_spec(g.template, rep)]
    ] * n
    base_done = min(len(base_store.done_ids()), n * len(groups))
    known = _known_base(results_dir / sweep.name / "base_lr.json")
    fake = [{"group": g.label, "best": rep} for g in groups]
    offsets = {i: {float(k) for k in v.bracket} for i in range(len(sweep.trials))}
    bracket = transfer_trials(sweep, known or fake, offsets)
    points = len(transfer_trials(sweep, known or fake, {i: {0.0} for i in range(len(sweep.trials))}))
    bracket_done = recorded_done(store, bracket) if known else 0
    per_round, rounds = 3, max_rounds(v) - 1
    bound = points * per_round * rounds
    point_specs = transfer_trials(sweep, known or fake, {i: {0.0} for i in range(len(sweep.trials))})
    point_cost = model.total(point_specs)
    others = ", ".join(
        f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in rep.items() if k != "lr"
    )
    todo_bracket = [t for t in bracket if t.trial_id not in store.done_ids()] if known else bracket
    lines = _header(sweep) + [
        f"grid: {_axes_line(sweep).removeprefix('trials: ')} points (seeds from {seeds_from})",
        f"tune-base: {len(groups)} Optuna stud{'y' if len(groups) == 1 else 'ies'} x {n} trials = {n * len(groups)} "
        f"at the base width; already recorded in {base_store.dir}: {base_done}",
        f"bracket: {points} (group, width, parametrization, seed) points x {len(v.bracket)} learning rates "
        f"(verify.bracket) = {len(bracket)} trials; already recorded: "
        + (
            f"{bracket_done} (η*_base from base_lr.json)"
            if known
            else f"not known until tune-base has found η*_base ({len(store.done_ids())} done trials in {store.dir})"
        ),
        f"refinement: then at most {rounds} rounds (verify.max_extend {int(v.max_extend)}, resolution "
        f"{float(v.resolution):g}) of at most {per_round} learning rates per point: at most {bound} more trials",
        _seeding_line(sweep, points, len(v.bracket) + per_round * rounds),
        resources_line(sweep, address, n_slots),
        cost_line("estimated cost of tune-base's trials to run", model.total(base_specs[base_done:]), n_slots),
        cost_line("estimated cost of the bracket's trials to run", model.total(todo_bracket), n_slots),
        cost_line("refinement, at most", None if point_cost is None else point_cost * per_round * rounds, n_slots),
        f"estimate from: {model.basis()}" + (f"; tune-base's trials costed at {others}" if others else ""),
    ]
    return lines
