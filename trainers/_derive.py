"""Derive a μP table by measurement: choose width exponents so every measured slope is 0.

The unknowns are exponents of m = width / base_width (see ``_param``): per role (input, hidden,
output) the init variance and the learning rate, the forward multiplier fixed at the table's
value (the convention every shipped table uses, which removes the symmetry between the three),
plus the extras an algorithm declares as its own (:func:`register_desiderata`). The measured
quantities, each as its log2-log2 slope against width on one fixed batch with the initial error
equalised (targets y + f_0(x), as in the coordinate check):

- ``init layers.l``: RMS h_l at initialisation (every layer but the output; the output too when
  the algorithm declares ``output_init``);
- ``change layers.l @t``: RMS(h_l(t) − h_l(0)) after step t (stable: nothing blows up);
- ``own layers.l @t``: RMS(α_l (W_l(t) − W_l(0)) ⋆ φ(h_{l−1}(t))), the layer's own update's
  effect (maximal: every layer learns, none vanishes);
- ``carried layers.l @t`` (l ≥ 1): RMS(α_l W_l(0) ⋆ (φ(h_{l−1}(t)) − φ(h_{l−1}(0)))), the change
  carried up from the layers below through the initial weights (maximal too: without it, BP's
  output init variance could go below μP's m^−1 with larger lower-layer lrs, the output then
  ignoring what the hidden layers learned);
- the algorithm's probes (e.g. TP's target sizes and feedback changes).

Every slope's target is 0. The search (:func:`derive`): measure, estimate the Jacobian of the
slopes in the exponents by forward differences, take the least-squares step, snap to the
half-integer lattice, repeat until the snapped exponents stop moving; the last measurement is
the confirming coordinate check.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import torch

from . import _param
from ._base import make_trainer
from ._config import TrainerConfig
from ._data import Dataset, make_teacher_student
from ._fit import loglog_slope
from ._param import ROLES, Table

ROW_UNKNOWNS = tuple(f"{role}.{q}" for role in ROLES for q in ("init_var", "lr"))


@dataclass(frozen=True)
class Desiderata:
    """What an algorithm adds to the generic conditions.

    Attributes:
        extras: its own exponents (``Table.extras`` keys) that the search solves for.
        output_init: the output's pre-activation at initialisation must be width-independent too
            (without it, only the later changes constrain the output's init variance).
        probe: ``probe(trainer, x, y, start, step) -> {name: rms}``; called at step 0 with
            ``start=None`` (its return value's ``"_start"`` entry, if any, is passed as ``start``
            at later steps and is not a measurement). Each name's RMS must be width-independent.
        continuation: ``continuation(cfg, start) -> [cfg', ...]``: configs to derive first, each result's
            rows starting the next search (the last starts ``cfg``'s); for a family whose start
            table is far outside the linear regime (PC at γ̄_L = −1 from SP).
        note: one line saying why (printed by ``derive``).
    """

    extras: tuple[str, ...] = ()
    output_init: bool = False
    probe: Callable | None = None
    continuation: Callable | None = None
    note: str = ""


DESIDERATA: dict[str, Desiderata] = {}


def register_desiderata(algorithm: str, desiderata: Desiderata) -> None:
    """Declare ``algorithm``'s own exponents and conditions for :func:`derive`."""
    DESIDERATA[algorithm] = desiderata


@contextmanager
def using_table(cfg: TrainerConfig, table: Table):
    """Within the block, trainers of ``cfg`` resolve to ``table`` (the registered one is restored)."""
    key = _param._KEYS.get(cfg.algorithm, _param.default_key)(cfg)
    tables = _param._TABLES.setdefault(cfg.algorithm, {})
    had, old = key in tables, tables.get(key)
    tables[key] = table
    try:
        yield
    finally:
        if had:
            tables[key] = old
        else:
            del tables[key]


def table_with(table: Table, names: tuple[str, ...], values, name: str | None = None) -> Table:
    """``table`` with the exponents ``names`` (``role.init_var``, ``role.lr``, ``extras.KEY``) set."""
    rows = {role: table.rule(role) for role in ROLES}
    extras = dict(table.extras)
    for n, v in zip(names, values):
        head, _, q = n.partition(".")
        if head == "extras":
            extras[q] = float(v)
        else:
            rows[head] = replace(rows[head], **{q: float(v)})
    return Table(name or table.name, rows["input"], rows["hidden"], rows["output"], MappingProxyType(extras))


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


def _run_one(cfg: TrainerConfig, data: Dataset, batch_size: int, steps: int, des: Desiderata) -> dict[str, float]:
    """RMS of every measured quantity at one width and seed (names as in the module docstring)."""
    trainer = make_trainer(cfg, data.input_dim, data.output_dim)
    net = trainer.model
    x = data.x_train[:batch_size].to(trainer.device, trainer.dtype)
    with torch.no_grad():
        h0 = net.preactivations(x)
        y = trainer.targets(data.y_train[:batch_size]) + h0[-1]
    layers0 = copy.deepcopy(net.layers)
    with torch.no_grad():
        inputs0 = [net.shape_input(x)] + [net.phi(h) for h in h0[:-1]]
    out, last = {}, net.depth - 1
    for l, h in enumerate(h0):
        if l < last or des.output_init:
            out[f"init layers.{l}"] = _rms(h)
    start = None
    if des.probe is not None:
        got = dict(des.probe(trainer, x, y, None, 0))
        start = got.pop("_start", None)
        out.update(got)
    for t in range(1, steps + 1):
        stats = trainer.step(x, y)
        if stats.get("diverged"):  # every later quantity is missing: its slope is NaN
            return {k: float("nan") for k in out}
        with torch.no_grad():
            hs, pairs = net.forward_pairs(x, lambda h: (net.phi(h),))
            inputs = [net.shape_input(x)] + [p[0] for p in pairs]
            for l in range(net.depth):
                own = (net.layers[l](inputs[l]) - layers0[l](inputs[l])) * net.multipliers[l]
                out[f"own layers.{l} @{t}"] = _rms(own)
                if l > 0:  # the change carried from below through the initial weights
                    carried = (layers0[l](inputs[l]) - layers0[l](inputs0[l])) * net.multipliers[l]
                    out[f"carried layers.{l} @{t}"] = _rms(carried)
                out[f"change layers.{l} @{t}"] = _rms(hs[l] - h0[l])
        if des.probe is not None:
            out.update({f"{k} @{t}": v for k, v in des.probe(trainer, x, y, start, t).items()})
    return out


@dataclass
class Measurement:
    """Slopes of one table: ``slopes`` {quantity: slope}, ``rms`` {(quantity, width): mean RMS}."""

    table: Table
    slopes: dict[str, float]
    rms: dict[tuple[str, int], float]
    cpu_s: float


def measure(
    cfg: TrainerConfig,
    table: Table,
    widths,
    steps: int = 2,
    seeds=(0,),
    data: Dataset | None = None,
    batch_size: int = 32,
    desiderata: Desiderata | None = None,
) -> Measurement:
    """Every quantity's slope of log2 RMS (mean over seeds) against log2 width, under ``table``
    (``desiderata``: the algorithm's registered ones by default)."""
    des = desiderata or DESIDERATA.get(cfg.algorithm, Desiderata())
    data = data or make_teacher_student(n_train=batch_size, n_test=1, seed=1234)
    t0 = time.process_time()
    per_width: dict[int, list[dict[str, float]]] = {}
    with using_table(cfg, table):
        for w in widths:
            per_width[int(w)] = [
                _run_one(cfg.replace(width=int(w), seed=int(s)), data, batch_size, steps, des) for s in seeds
            ]
    names = list(dict.fromkeys(k for runs in per_width.values() for r in runs for k in r))
    rms = {(k, w): float(np.mean([r.get(k, np.nan) for r in runs])) for w, runs in per_width.items() for k in names}
    slopes = {k: loglog_slope(list(per_width), [rms[(k, w)] for w in per_width]) for k in names}
    return Measurement(table, slopes, rms, time.process_time() - t0)


@dataclass
class Derivation:
    """The result of :func:`derive`: the snapped table, its confirming measurement and the search's record."""

    table: Table
    unknowns: tuple[str, ...]
    final: Measurement
    history: list[dict] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)
    evaluations: int = 0
    cpu_s: float = 0.0
    tolerance: float = 0.2

    @property
    def max_abs_slope(self) -> float:
        v = np.array(list(self.final.slopes.values()), float)
        return float(np.nanmax(np.abs(v))) if np.isfinite(v).any() and not np.isnan(v).any() else float("inf")

    @property
    def passed(self) -> bool:
        return self.max_abs_slope < self.tolerance


def snap(values, step: float = 0.5) -> np.ndarray:
    """Round to the lattice of multiples of ``step`` (half-integers by default)."""
    return np.round(np.asarray(values, float) / step) * step


def derive(
    cfg: TrainerConfig,
    start: Table,
    widths=(128, 256, 512, 1024),
    steps: int = 2,
    seeds=(0,),
    batch_size: int = 32,
    fd_step: float = 0.5,
    max_iter: int = 8,
    tolerance: float = 0.2,
    constraint_weight: float = 4.0,
    progress: Callable[[str], None] | None = None,
    output_init: bool | None = None,
    _continue: bool = True,
) -> Derivation:
    """Search the exponents that make every measured slope 0, starting from ``start``.

    Args:
        cfg: the trainer config (algorithm, optimizer, lr, base_width, depth, ...); its width is
            replaced by each of ``widths``.
        start: the starting table (e.g. the algorithm's SP table); multipliers and the extras the
            algorithm does not declare are kept from it.
        widths, steps, seeds, batch_size: what each measurement runs (see :func:`measure`).
        fd_step: the exponent step of the forward differences.
        max_iter: Newton iterations at most.
        tolerance: the confirming check passes when every |slope| is below it.
        constraint_weight: weight of the init and algorithm rows in the least squares (changes: 1).
        progress: called with one line per measurement.
        output_init: override the algorithm's ``Desiderata.output_init`` (the output Θ(1) at init).

    Returns:
        :class:`Derivation`; ``unpinned`` lists exponents no measured slope depends on.
    """
    say = progress or (lambda _msg: None)
    des = DESIDERATA.get(cfg.algorithm, Desiderata())
    if output_init is not None:
        des = replace(des, output_init=bool(output_init))
    pre_evals, pre_cpu = 0, 0.0
    for pre in des.continuation(cfg, start) if des.continuation and _continue else []:
        say(f"  first at {_diff(cfg, pre)} (continuation)")
        pre_start = Table(
            start.name,
            start.input,
            start.hidden,
            start.output,
            MappingProxyType({**start.extras, **_param.resolve_table(pre).extras}),
        )  # pre's own extras
        d = derive(
            pre,
            pre_start,
            widths,
            steps,
            seeds,
            batch_size,
            fd_step,
            max_iter,
            tolerance,
            constraint_weight,
            progress,
            output_init,
            _continue=False,
        )
        start = Table(start.name, d.table.input, d.table.hidden, d.table.output, start.extras)
        pre_evals, pre_cpu = pre_evals + d.evaluations, pre_cpu + d.cpu_s
        say(f"  then from its rows at {_diff(pre, cfg)}")
    unknowns = ROW_UNKNOWNS + tuple(f"extras.{k}" for k in des.extras)
    base = dict(zip(ROW_UNKNOWNS, [getattr(start.rule(r), q) for r in ROLES for q in ("init_var", "lr")]))
    theta = np.array([base[n] if n in base else start.extra(n.split(".", 1)[1]) for n in unknowns], float)
    name = f"{cfg.algorithm}/derived/{cfg.optimizer}"
    n_eval, cpu, history, unpinned = 0, 0.0, [], []

    def run(th, why):
        nonlocal n_eval, cpu
        m = measure(
            cfg, table_with(start, unknowns, th, name), widths, steps, seeds, batch_size=batch_size, desiderata=des
        )
        n_eval, cpu = n_eval + 1, cpu + m.cpu_s
        v = np.array(list(m.slopes.values()), float)
        say(
            f"  [{n_eval}] {why}: max |slope| {np.nanmax(np.abs(v)) if np.isfinite(v).any() else float('nan'):.3f}"
            f" ({m.cpu_s:.1f} s CPU)"
        )
        return m

    current = run(theta, "start " + _fmt(unknowns, theta))
    keys = list(current.slopes)
    # conditions at initialisation and the algorithm's own weigh more than the change slopes: they
    # are few (one row each) and must not be traded against the many change rows
    weights = np.array([1.0 if k.startswith(("own ", "change ", "carried ")) else constraint_weight for k in keys])

    def residual(m: Measurement) -> np.ndarray:
        return weights * np.array([m.slopes.get(k, np.nan) for k in keys], float)

    def size(r: np.ndarray) -> float:
        return float(np.linalg.norm(r)) if np.isfinite(r).all() else float("inf")

    for it in range(max_iter):
        r = residual(current)
        history.append(
            {
                "iteration": it,
                "exponents": dict(zip(unknowns, theta.tolist())),
                "max_abs_slope": float(np.abs(r / weights).max()) if np.isfinite(r).all() else float("nan"),
            }
        )
        # no early stop below the tolerance: a half-step in an exponent can move a slope by less than
        # it (BP Adam's output init_var −0.5 measured 0.18); stop where the snapped step returns here
        if not np.isfinite(r).all():
            raise ValueError(
                f"the measurement at {_fmt(unknowns, theta)} diverged or did not move "
                f"({', '.join(k for k, v in zip(keys, r) if not np.isfinite(v))}); lower the lr"
            )
        cols: dict[tuple[int, int], np.ndarray] = {}

        def column(i: int, side: int) -> np.ndarray | None:
            """One-sided difference of the slopes in unknown i (side +1 or −1); None if it diverged."""
            if (i, side) not in cols:
                th = theta.copy()
                th[i] += side * fd_step
                col = (residual(run(th, f"d/d {unknowns[i]} ({side * fd_step:+g})")) - r) / (side * fd_step)
                cols[(i, side)] = col if np.isfinite(col).all() else None
            return cols[(i, side)]

        sides = [1 if column(i, 1) is not None else -1 for i in range(len(unknowns))]
        for _ in range(3):  # the slopes are piecewise linear: use each column's side the step goes to
            jac = np.stack(
                [
                    np.nan_to_num(column(i, sd)) if column(i, sd) is not None else np.zeros(len(keys))
                    for i, sd in enumerate(sides)
                ],
                axis=1,
            )
            delta = np.linalg.lstsq(jac, -r, rcond=1e-3)[0]
            want = [(1 if d > 0 else -1) if abs(d) >= fd_step / 2 else sd for d, sd in zip(delta, sides)]
            want = [w if column(i, w) is not None else sd for i, (w, sd) in enumerate(zip(want, sides))]
            if want == sides:
                break
            sides = want
        unpinned = [n for n, col in zip(unknowns, jac.T) if np.abs(col).max() < 0.05]
        tried = [theta]

        def try_step(jac: np.ndarray) -> bool:
            """Take the snapped least-squares step (×1, ×2, ×½) if it lowers the slopes."""
            nonlocal theta, current
            delta = np.linalg.lstsq(jac, -r, rcond=1e-3)[0]
            for scale in (1.0, 2.0, 0.5):  # a kink can stop a linear step short, or past the lattice point
                new = snap(theta + scale * delta) + 0.0  # + 0.0: no -0.0
                if any(np.array_equal(new, t) for t in tried):
                    continue
                tried.append(new)
                trial = run(new, f"step {it + 1} " + _fmt(unknowns, new))
                rt = residual(trial)
                if size(rt) < size(r) or (np.isfinite(rt).all() and np.abs(rt).max() < np.abs(r).max()):
                    theta, current = new, trial
                    return True
            return False

        if try_step(jac):
            continue
        # stuck: the other side of every kink (backward differences), then both sides averaged
        back = [column(i, -1) for i in range(len(unknowns))]
        jb = np.stack([np.nan_to_num(c) if c is not None else jac[:, i] for i, c in enumerate(back)], axis=1)
        if try_step(jb) or try_step(
            (
                jb
                + np.stack(
                    [
                        np.nan_to_num(column(i, 1)) if column(i, 1) is not None else jb[:, i]
                        for i in range(len(unknowns))
                    ],
                    axis=1,
                )
            )
            / 2
        ):
            continue
        say("  no snapped least-squares step lowers the slopes: stopping")
        break
    # Biases are not measured (bias: false), so the derived table sets no bias rows: its biases follow
    # the input row (LayerRule.bias_lr = None) until a bias_lr is written into the table by hand.
    derived = table_with(start, unknowns, theta, name)
    derived = Table(derived.name, *(replace(derived.rule(r), bias_lr=None) for r in ROLES), derived.extras)
    return Derivation(derived, unknowns, current, history, unpinned, n_eval + pre_evals, cpu + pre_cpu, tolerance)


def _diff(a: TrainerConfig, b: TrainerConfig) -> str:
    return ", ".join(f"{k}={getattr(b, k)}" for k in a.field_names() if getattr(a, k) != getattr(b, k)) or "same"


def _fmt(names, values) -> str:
    return ", ".join(f"{n}={v:+.2f}" for n, v in zip(names, values))
