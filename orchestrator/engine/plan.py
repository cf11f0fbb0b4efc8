"""``--dry-run``: what a sweep or a verify would run and roughly what it would cost; runs and writes nothing.

The plan holds the trial counts per grid axis and in total, how many of those trials the results
directory already holds as done (read through :class:`ResultsStore`), the resources per trial, and
an **estimate** of the cost in trial-seconds (training seconds, summed over trials): per kind of
trial (its trainer config without lr, seed and parametrization, which do not change its cost), the
mean ``wall_s`` of such trials recorded done (ok or diverged) on this machine, else a calibration: a few steps and
one evaluation of that trial, timed in this process and scaled to its epochs (on this machine's CPU
when the trials ask for a GPU it lacks: then an upper bound, and the plan says so).

The **wall time** (:class:`WallModel`) adds what is not training. Where earlier commands ran on this
host (:mod:`.overheads`: the per-host cache, and the closed stages of the results directory's sweeps)
it uses what they measured: the command's start and end around its stages, each stage's lead (its start
to the first trial) and tail (the last trial to its end: compaction), the gap between two Tune runs of
a stage, and each pack's (else each trial's) overhead on its slot; and it scales calibrated trial-seconds by the ratio
real / calibrated those runs found. Each part no run measured falls back to a prior: the overhead per trial
and the gap between two Tune runs measured on the committed studies (:mod:`.priors`: ``PER_TRIAL_S``,
``ROUND_GAP_S``; for a verify also the share of a trial's seconds spent, diverged trials stopping early, and
the refinement trials per point), or a constant measured on the repository's 2-CPU machine while other jobs
ran: the command's own start and end (:data:`PROCESS_S`: imports, checks, compaction, exit), starting
embedded Ray (:data:`RAY_START_S`) and the first Ray Tune run of a stage (:data:`TUNE_RUN_S`: its set-up,
the first workers importing torch and trainers). Finished work is excluded: recorded trials, and for
verify every round whose trials the results directory already holds (:func:`replay_verify`), so a
finished verify plans ~0 more.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestrator.engine import priors
from orchestrator.engine.overheads import Measured, load_now, measured
from orchestrator.engine.progress import duration
from orchestrator.spec.config import Sweep, TrialSpec
from orchestrator.stores.results_store import ResultsStore

FREE_KEYS = ("lr", "seed", "parametrization")  # cost the same whatever their value
# Seconds of a command that are not training, measured on the 2-CPU machine (shared): see the module doc.
PROCESS_S = 10.0  # python start, imports, checks, compaction, exit (a sweep with nothing to run: 12 s)
RAY_START_S = 14.0  # embedded Ray's start and shutdown (a cluster is joined in ~2 s)
TUNE_RUN_S = 12.0  # a stage's first Ray Tune run: its set-up, the first workers' imports, its end


def cost_key(trainer: dict[str, Any]) -> tuple:
    """What decides a trial's cost: its trainer config without lr, seed and parametrization."""
    return tuple(sorted((k, str(v)) for k, v in trainer.items() if k not in FREE_KEYS))


def axis_counts(sweep: Sweep) -> list[tuple[str, int]]:
    """``(grid key, number of distinct values)`` in the grid's order."""
    return [(k, len({str(t.trainer[k]) for t in sweep.trials})) for k in sweep.swept_keys]


@dataclass
class CostModel:
    """Seconds per trial by :func:`cost_key`: the mean ``wall_s`` of the trials of that kind recorded done
    (ok or diverged: a diverged trial's early stop is its real cost) on this machine, else a calibration
    scaled by ``ratio`` (real / calibrated, :attr:`overheads.Measured.calibration_ratio`) when known."""

    recorded: list[pd.DataFrame] = field(default_factory=list)
    calibrate: bool = True
    threads: int = 1
    gpu: bool = False  # the trials ask for a GPU (resources.gpu > 0)
    cpu_for_gpu: bool = False  # set when a trial that would run on a GPU was timed on this CPU
    ratio: float | None = None  # real / calibrated trial-seconds, measured by earlier runs on this host
    ratio_runs: int = 0  # how many
    spend: float = 1.0  # calibrated seconds x this when no ratio is known (a verify: :data:`priors.SPEND`)
    seconds: dict[tuple, float] = field(default_factory=dict)
    source: dict[tuple, str] = field(default_factory=dict)
    calibrated: dict[tuple, float] = field(default_factory=dict)  # the calibration's own seconds, unscaled
    _data: dict[str, Any] = field(default_factory=dict)

    def _from_records(self, spec: TrialSpec) -> list[float]:
        host = socket.gethostname()
        out: list[float] = []
        for table in self.recorded:
            if table.empty or "wall_s" not in table.columns:
                continue
            rows = table[table.status.isin(["ok", "diverged"]) & (table.get("hostname", host) == host)]
            for key, value in spec.trainer.items():  # a column the table has must match; others are fixed there
                if key not in FREE_KEYS and key in rows.columns:
                    rows = rows[rows[key].astype(str) == str(value)]
            out += [float(v) for v in rows.wall_s if math.isfinite(float(v))]
        return out

    def _calibrate(self, spec: TrialSpec) -> float:
        """Time a few steps and one evaluation of ``spec``'s trial here (:func:`packs.calibrate`); a trial
        that asks for a GPU this machine lacks is timed on the CPU (an upper bound, said in the plan)."""
        import torch

        from orchestrator.engine import packs

        device = spec.config.device
        wants_gpu = device.startswith("cuda") or (device == "auto" and self.gpu)
        if wants_gpu and not torch.cuda.is_available():
            device, self.cpu_for_gpu = "cpu", True
        elif device == "auto":
            device = "cuda" if wants_gpu else "cpu"
        return packs.calibrate(spec.to_dict(), self.threads, device, self._data)

    def trial_seconds(self, spec: TrialSpec) -> float | None:
        """Estimated training seconds of ``spec`` (None when unknown and calibration is off)."""
        key = cost_key(spec.trainer)
        if key not in self.seconds:
            recorded = self._from_records(spec)
            if recorded:
                self.seconds[key], self.source[key] = statistics.fmean(recorded), "recorded"
            elif self.calibrate:
                self.calibrated[key] = self._calibrate(spec)
                self.seconds[key], self.source[key] = self.calibrated[key] * (self.ratio or self.spend), "calibrated"
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
                f"{rec} kind(s) of trial from the mean wall_s of trials recorded done (ok or diverged) on this "
                f"machine ({socket.gethostname()})"
            )
        if cal:
            from orchestrator.engine.packs import CALIBRATION_STEPS

            scaled = (
                f"x {self.ratio:.2f}, the ratio real / calibrated of {self.ratio_runs} earlier run(s) on this host"
                if self.ratio
                else f"x {self.spend:.2f}, the share of an undiverged trial's seconds a trial of the committed verify "
                "studies spent (diverged ones stop early; orchestrator.engine.priors)"
                if self.spend != 1.0
                else "a diverged trial stops early, so this errs high"
            )
            parts.append(
                f"{cal} kind(s) calibrated here (the median of {CALIBRATION_STEPS} steps and one evaluation each, "
                f"scaled to the epochs; {scaled})"
            )
        if self.cpu_for_gpu:
            parts.append("the trials ask for a GPU but were timed on this machine's CPU: an upper bound for a GPU")
        return ("; ".join(parts) or "nothing to estimate") + (
            ". Trial-seconds count training only (wall_s); the wall time adds the start-up, each Tune run "
            "and each trial's or pack's overhead (see its line)"
        )


def recorded_done(store: ResultsStore, specs: list[TrialSpec]) -> int:
    """How many of ``specs`` the store holds as done (ok or diverged)."""
    done = store.done_ids()
    return sum(s.trial_id in done for s in specs)


def slots(sweep: Sweep, address: str | None, max_concurrent: int | None = None) -> int | None:
    """Trials at once on embedded Ray (CPUs here / CPUs per trial, capped by max_concurrent); None on a cluster."""
    from orchestrator.engine.driver import embedded

    if not embedded(address):
        return None
    cpu = float(sweep.config.resources.cpu)
    n = int((os.cpu_count() or 1) // cpu) if cpu > 0 else (os.cpu_count() or 1)
    cap = sweep.config.max_concurrent if max_concurrent is None else max_concurrent
    return max(1, min(n, cap) if cap else n)


def pack_costs(
    model: CostModel, specs: list[TrialSpec], n_slots: int, per_trial: float = 0.0, per_pack: float = 0.0
) -> list[float]:
    """Estimated seconds of each pack ``tune_runner.run_trials`` would make of ``specs`` (:func:`packs.form_packs`,
    with the same rule: one trial per pack up to ``2 x slots`` trials): its members' training, plus
    ``per_trial`` a member and ``per_pack`` a pack."""
    from orchestrator.engine import packs

    if not specs:
        return []
    secs = {s.trial_id: model.trial_seconds(s) or packs.FALLBACK_SECONDS for s in specs}
    target = float(os.environ.get("MUTRANSFER_PACK_SECONDS", packs.PACK_SECONDS))
    grouping = secs if target > 0 and len(specs) > 2 * n_slots else {}
    formed = packs.form_packs([s.to_dict() for s in specs], grouping, target, n_slots)
    return [per_pack + sum(secs[m["trial_id"]] + per_trial for m in p) for p in formed]


def makespan(costs: list[float], n_slots: int) -> float:
    """Seconds until the last of ``costs`` ends on ``n_slots`` slots, longest first."""
    ends = [0.0] * max(1, n_slots)
    for c in sorted(costs, reverse=True):
        i = ends.index(min(ends))
        ends[i] += c
    return max(ends)


@dataclass
class WallModel:
    """The expected wall time of one command: start-up, then stages of Tune runs (see the module doc).
    ``measured``: what earlier runs on this host measured (:func:`overheads.measured`); each part it
    lacks is the module's constant."""

    n_slots: int
    embedded: bool = True
    measured: Measured = field(default_factory=Measured)
    parts: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)

    def stage(
        self, label: str, model: CostModel, specs: list[TrialSpec], runs: int = 1, new_stage: bool = True
    ) -> float:
        """Add ``runs`` Tune runs of ``specs`` (split evenly over the runs); their seconds. ``new_stage``: the
        first run opens a results store (its lead and tail: compaction); else it follows one of the same store."""
        if not specs or runs <= 0:
            return 0.0
        m = self.measured
        per = math.ceil(len(specs) / runs)
        chunks = [specs[i : i + per] for i in range(0, len(specs), per)]
        if m.per_pack_s is not None:
            over = {"per_pack": m.per_pack_s}
        elif m.per_trial_s is not None:
            over = {"per_trial": m.per_trial_s}
        else:  # measured on the committed studies (priors.PER_TRIAL_S)
            over = {"per_trial": priors.PER_TRIAL_S}
        packs_s = sum(makespan(pack_costs(model, c, self.n_slots, **over), self.n_slots) for c in chunks)
        gap = priors.ROUND_GAP_S if m.round_gap_s is None else m.round_gap_s
        first = gap
        if new_stage:
            first = TUNE_RUN_S if m.lead_s is None else m.lead_s + (m.tail_s or 0.0)
        secs = first + (len(chunks) - 1) * gap + packs_s
        self.parts.append((f"{label} {len(chunks)} Tune run(s)", secs))
        return secs

    def ends(self) -> tuple[float, float]:
        """Seconds before the first stage (python, checks, Ray's start, MLflow) and after the last (exit)."""
        m = self.measured
        ray = (RAY_START_S if self.embedded else 2.0) if self.parts else 0.0
        pre = PROCESS_S / 2 + ray if m.pre_s is None else m.pre_s
        post = PROCESS_S / 2 if m.post_s is None else m.post_s
        return pre, post

    def total(self) -> float:
        """Start-up and end plus the stages."""
        return sum(self.ends()) + sum(s for _, s in self.parts)

    def source(self) -> str:
        """Where the overheads come from: earlier runs on this host, or the module's constants."""
        m = self.measured
        if not m.runs:
            return "start-up and overheads assumed (no earlier run on this host measured them)"
        which = [
            name
            for name, v in (
                ("command start/end", m.pre_s if m.post_s is not None else None),
                ("Tune run lead/tail", m.lead_s),
                ("per pack" if m.per_pack_s is not None else "per trial", m.per_trial_s),
                ("between Tune runs", m.round_gap_s),
            )
            if v is not None
        ]
        scaled = (
            f"; x {m.scale:.2f} for the load now, {m.load:.1f} per CPU, against theirs"
            if m.load is not None and m.scale != 1.0
            else ""
        )
        return (
            f"start-up from {m.runs} earlier run(s) on this host ({', '.join(which) or 'nothing usable'}; "
            f"the rest assumed{scaled})"
        )

    def line(self, upper: bool = False) -> str:
        """``expected wall time: ~W (start-up ~S; stage ~X; ...)``."""
        pre, post = self.ends()
        detail = "; ".join(f"{what} ~{duration(s)}" for what, s in self.parts)
        where = f"on {self.n_slots} slot(s)" + ("" if self.embedded else " (the cluster's trials at once, assumed)")
        bound = " (an upper bound: trials timed on this CPU)" if upper else ""
        return (
            f"expected wall time: ~{duration(self.total())} {where}{bound}, start-up included "
            f"(command start ~{duration(pre)} and end ~{duration(post)}"
            + (f"; {detail}" if detail else "")
            + f"; {self.source()})"
        )


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
def plan_preflight(sweep: Sweep, results_dir, address: str | None) -> tuple[Any, str | None]:
    """:func:`driver.preflight` that plans what this machine cannot run (a GPU sweep on a laptop) instead
    of refusing it: ``(resolved results dir, note or None)``.

    Raises:
        BadInput: the results directory or a path built from the name is bad.
    """
    from orchestrator.engine.driver import embedded
    from orchestrator.engine.preflight import check_local_device, check_local_resources, probe_address
    from orchestrator.errors import BadInput
    from orchestrator.stores.paths import check_results_dir, inside

    results_dir = check_results_dir(results_dir)
    inside(results_dir / sweep.name / "tune", results_dir, f"{sweep.source}: name={sweep.name!r}:")
    experiment = sweep.config.tracking.experiment or sweep.name
    inside(results_dir / "mlartifacts" / experiment, results_dir, f"{sweep.source}: tracking.experiment:")
    try:
        probe_address(address)
        if embedded(address):
            check_local_device({t.trainer["device"] for t in sweep.trials}, f"{sweep.source}: trainer.device")
            check_local_resources(float(sweep.config.resources.cpu), float(sweep.config.resources.gpu), sweep.source)
    except BadInput as exc:
        return results_dir, f"planned for a cluster: this machine could not run it as asked ({exc})"
    return results_dir, None


def _slots_for(sweep: Sweep, address: str | None, note: str | None, max_concurrent: int | None = None) -> int | None:
    return None if note else slots(sweep, address, max_concurrent)


def _header(sweep: Sweep) -> list[str]:
    from orchestrator.spec.config import to_yaml

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
    from orchestrator.engine.driver import embedded
    from orchestrator.spec.config import check_runnable

    results_dir, note = plan_preflight(sweep, results_dir, address)
    store = ResultsStore(results_dir / sweep.name)
    store.check_owner(sweep.identity())
    check_runnable(sweep)
    done = store.done_ids()
    todo = [t for t in sweep.trials if t.trial_id not in done]
    n_slots = _slots_for(sweep, address, note, max_concurrent)
    meas = _measured(results_dir, embedded(address) and not note, n_slots)
    model = _model(sweep, [store.trials()], calibrate, meas)
    seconds = model.total(todo)
    lines = _header(sweep) + [
        _axes_line(sweep),
        f"already recorded (ok or diverged) in {store.dir}: {len(sweep.trials) - len(todo)}; to run: {len(todo)}",
        resources_line(sweep, address, n_slots) + (f"; {note}" if note else ""),
        cost_line("estimated cost of the trials to run", seconds, n_slots),
    ]
    if seconds is not None:
        wall = WallModel(_assumed_slots(sweep, n_slots, max_concurrent), embedded(address) and not note, meas)
        wall.stage("trials:", model, todo)
        lines.append(wall.line(model.cpu_for_gpu))
    lines.append(f"estimate from: {model.basis()}")
    return lines


def _model(sweep: Sweep, tables: list[pd.DataFrame], calibrate: bool, meas: Measured | None = None) -> CostModel:
    r = sweep.config.resources
    ratio = meas.calibration_ratio if meas is not None else None
    runs = meas.calibration_runs if meas is not None else 0
    return CostModel(tables, calibrate, max(1, int(float(r.cpu))), gpu=float(r.gpu) > 0, ratio=ratio, ratio_runs=runs)


def _measured(results_dir, here: bool, n_slots: int | None = None) -> Measured:
    """What earlier runs on this host measured (:func:`overheads.measured`) when the trials run here, scaled
    to the load now plus the command's own workers (``n_slots``); else nothing (a cluster's are not ours)."""
    if not here:
        return Measured()
    now = load_now()
    own = (n_slots or 1) / (os.cpu_count() or 1)
    return measured(results_dir, at_load=None if now is None else now + own)


def _assumed_slots(sweep: Sweep, n_slots: int | None, max_concurrent: int | None = None) -> int:
    """Slots for the wall time: those here, else ``max_concurrent``, else 1 (the plan says it assumed them)."""
    cap = sweep.config.max_concurrent if max_concurrent is None else max_concurrent
    return n_slots or int(cap or 1)


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
    from orchestrator.studies.seeding import seed_plan

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
    from orchestrator.engine.driver import embedded
    from orchestrator.spec.config import check_runnable, searched_spec
    from orchestrator.spec.validate import check_search, check_verify_run
    from orchestrator.studies.tune_base import search_groups, search_space
    from orchestrator.studies.verify import max_rounds, transfer_trials, with_seeds

    v = sweep.config.verify
    check_verify_run(sweep.config, (t.trainer["width"] for t in sweep.trials), sweep.source)  # as verify checks
    n = check_search(sweep.config, sweep.source, trials)
    seeds_from = "grid.seed" if "seed" in sweep.swept_keys else "verify.seeds"
    sweep = with_seeds(sweep)
    space = search_space(sweep)
    groups = search_groups(sweep, space)
    results_dir, note = plan_preflight(sweep, results_dir, address)
    check_runnable(sweep)
    store, base_store = ResultsStore(results_dir / sweep.name), ResultsStore(results_dir / sweep.name / "base")
    n_slots = _slots_for(sweep, address, note)
    meas = _measured(results_dir, embedded(address) and not note, n_slots)
    model = _model(sweep, [store.trials(), base_store.trials()], calibrate, meas)
    if model.ratio is None:  # no run on this host measured real / calibrated: the committed studies' prior
        model.spend = priors.SPEND
    rep = _representative(space)
    base_specs = [
        TrialSpec(**{**s, "swept": tuple(s["swept"])}) for g in groups for s in [searched_spec(g.template, rep)]
    ] * n
    base_done = min(len(base_store.done_ids()), n * len(groups))
    known = _known_base(results_dir / sweep.name / "base_lr.json")
    fake = [{"group": g.label, "best": rep} for g in groups]
    offsets = {i: {float(k) for k in v.bracket} for i in range(len(sweep.trials))}
    bracket = transfer_trials(sweep, known or fake, offsets)
    point_specs = transfer_trials(sweep, known or fake, {i: {0.0} for i in range(len(sweep.trials))})
    points = len(point_specs)
    done = store.done_ids()
    bracket_done = recorded_done(store, bracket) if known else 0
    per_round, rounds = 3, max_rounds(v) - 1
    bound = points * per_round * rounds
    point_cost = model.total(point_specs)
    others = ", ".join(
        f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}" for k, val in rep.items() if k != "lr"
    )
    todo_bracket = [t for t in bracket if t.trial_id not in done] if known else bracket
    # what is still to run: a replay of verify's rounds against what is recorded (known η*_base only)
    replay = replay_verify(sweep, known, store) if known else None
    expected_rounds = min(rounds, _halvings(v) + 2)
    # expected refinement trials per point: measured on the committed verify studies (priors.REFINE_EXTRA)
    per_point = min(per_round * rounds, 2 * _halvings(v) + priors.REFINE_EXTRA)
    if replay is None:
        pending, left, finished = list(todo_bracket), expected_rounds, False
        more = round(points * per_point) if not known or todo_bracket else 0
    else:
        pending, left, finished = replay
        more = 0 if finished else min(left, 2) * 2 * len(pending)
    lines = _header(sweep) + [
        f"grid: {_axes_line(sweep).removeprefix('trials: ')} points (seeds from {seeds_from})",
        f"tune-base: {len(groups)} Optuna stud{'y' if len(groups) == 1 else 'ies'} x {n} trials = {n * len(groups)} "
        f"at the base width; already recorded in {base_store.dir}: {base_done}",
        f"bracket: {points} (group, width, parametrization, seed) points x {len(v.bracket)} learning rates "
        f"(verify.bracket) = {len(bracket)} trials; already recorded: "
        + (
            f"{bracket_done} (η*_base from base_lr.json)"
            if known
            else f"not known until tune-base has found η*_base ({len(done)} done trials in {store.dir})"
        ),
    ]
    if finished:
        lines.append(
            "refinement and adaptive seeding: every round's trials are recorded (a replay of verify's rounds "
            "against the results): nothing more to run; verify would only analyse and report"
        )
    else:
        lines += [
            f"refinement: then at most {rounds} rounds (verify.max_extend {int(v.max_extend)}, resolution "
            f"{float(v.resolution):g}) of at most {per_round} learning rates per point: at most {bound} more trials"
            + (f"; expected ~{more} more after the {len(pending)} to run now" if known else f"; expected ~{more}"),
            _seeding_line(sweep, points, len(v.bracket) + per_round * rounds),
        ]
    lines += [
        resources_line(sweep, address, n_slots) + (f"; {note}" if note else ""),
        cost_line("estimated cost of tune-base's trials to run", model.total(base_specs[base_done:]), n_slots),
        cost_line(
            "estimated cost of the bracket's trials to run" if replay is None else "estimated cost of the round to run",
            model.total(pending),
            n_slots,
        ),
    ]
    if not finished:
        lines.append(
            cost_line("refinement, at most", None if point_cost is None else point_cost * per_round * rounds, n_slots)
        )
    if point_cost is not None and model.total(base_specs[base_done:]) is not None and model.total(pending) is not None:
        wall = WallModel(_assumed_slots(sweep, n_slots), embedded(address) and not note, meas)
        todo_base = base_specs[base_done:]
        base_rounds = math.ceil(
            math.ceil(len(todo_base) / max(1, len(groups))) / max(1, int(sweep.config.search.batch))
        )
        wall.stage("tune-base:", model, todo_base, base_rounds)
        wall.stage("bracket/round:", model, pending, 1 if pending else 0)
        extra = (point_specs * math.ceil(more / max(1, points)))[:more]
        wall.stage("refinement (expected):", model, extra, left if more else 0, new_stage=not pending)
        lines.append(wall.line(model.cpu_for_gpu) + ("; more if groups need more seeds" if not finished else ""))
    lines.append(f"estimate from: {model.basis()}" + (f"; tune-base's trials costed at {others}" if others else ""))
    return lines


def _halvings(v) -> int:
    return priors.halvings(float(v.resolution))


def _replay_measure(sweep: Sweep, base, trials: pd.DataFrame, done: set[str]) -> tuple[list[TrialSpec], int]:
    """verify's ``_measure`` against what is recorded: the first round's trials not all recorded yet
    (empty when every round is) and the rounds left after it."""
    from orchestrator.studies.verify import max_rounds, refinements, transfer_trials

    offsets = {i: {float(k) for k in sweep.config.verify.bracket} for i in range(len(sweep.trials))}
    specs = transfer_trials(sweep, base, offsets)
    total = max_rounds(sweep.config.verify)
    for round_ in range(1, total + 1):
        todo = [t for t in specs if t.trial_id not in done]
        if todo:
            return todo, total - round_
        more = refinements(sweep, base, trials, offsets)
        if not more:
            break
        for i, extra in more.items():
            offsets[i] |= extra
        specs = transfer_trials(sweep, base, offsets)
    return [], 0


def replay_verify(sweep: Sweep, base, store: ResultsStore) -> tuple[list[TrialSpec], int, bool]:
    """Replay verify's rounds and looks against the recorded trials: ``(trials of the first round not all
    recorded, rounds left after it, whether nothing is left at all)``. Reads only."""
    from orchestrator.studies.seeding import at_seeds, grow, seed_plan, undecided

    trials, done = store.trials(), store.done_ids()
    todo, left = _replay_measure(sweep, base, trials, done)
    if todo:
        return todo, left, False
    try:
        from analysis.load import load_sweep
        from analysis.transfer import analyze_logs

        values, looks = seed_plan(sweep)
        given: dict[tuple, set[int]] = {}
        for look in range(len(looks) - 1):
            result = analyze_logs(at_seeds(load_sweep(store.dir), values[: looks[look]]))
            need = undecided(result.groups, result.keys)
            if need.empty:
                break
            pts = grow(sweep, need, result.keys, values[: looks[look + 1]], given)
            if pts:
                todo, left = _replay_measure(Sweep(sweep.name, sweep.source, sweep.config, pts), base, trials, done)
                if todo:
                    return todo, left, False
    except Exception:  # the analysis cannot read it (yet): the looks are bounded by the seeding line
        return [], 0, False
    return [], 0, True
