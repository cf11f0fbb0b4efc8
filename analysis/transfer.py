"""Did the optimal learning rate transfer across widths? η*, the stability edge, drift, regret, verdict.

Per group (algorithm, parametrization, inference_steps and every other varying key) and width,
from each seed's own loss curve L(η) (diverged trials count as L = +inf):

    x*_sw      = argmin of a parabola in log2 η around the seed's best point (analysis.curve.optimum)
    η*(w)      = 2^mean_s x*_sw, with the t interval over seeds
    η_max(w)   = 2^mean_s (last stable log2 η below the first diverged one), when every seed diverged
    edge-limited: the next larger η of the best point diverged at most seeds
    drift k    = the mean over seeds of each seed's slope of x*_sw against log2 w, with its t
                 interval (analysis.stats.seed_slopes); k_edge the same for η_max
    regret(w)  = mean_s r_sw at the leave-one-seed-out base η*, measured at the base width too;
                 excess regret = mean_s (r_sw − r_s,base) (analysis.regret)

Every interval is at ``level`` (95 %, or a look of an adaptive verify: analysis.stats.look_level);
the largest excess regret's lower bound is simultaneous over the widths. L_sw(η*_base) is read
off the seed's parabola between the best point's neighbours, else interpolated linearly. The best
loss is the lowest one measured, not the parabola's minimum: with an asymmetric basin (a cliff
next to the optimum) the parabola's minimum can lie far below every measurement. The verdict is
:mod:`analysis.verdict`'s. ``docs/CALIBRATION.md`` shows the coverage on planted sweeps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .curve import Optimum, loss_at, optimum, stability_edge  # noqa: F401  (re-exported)
from .regret import excess, leave_one_out, seed_regret, summarize
from .schema import AXES, DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC, GROUP_KEYS, RESULT_COLUMNS, counts_as_diverged, sign
from .stats import LEVEL, look_level, mean_interval, seed_schedule, seed_slopes, t_quantile
from .verdict import VERDICTS, apply_controls, verdict  # noqa: F401  (re-exported)

NOT_KEYS = frozenset({"trial_id", "sweep", *AXES, *RESULT_COLUMNS})


@dataclass
class TransferResult:
    """The transfer analysis of a sweep.

    Attributes:
        keys: group columns of a verdict (GROUP_KEYS plus every other swept key that varies).
        per_width: one row per (keys, width): ``lr_star, lr_star_lo, lr_star_hi, best_loss``
            (mean over seeds of the lowest loss measured), ``regret, regret_lo, regret_hi``
            (measured at the leave-one-seed-out base η*), ``excess_regret, excess_lo, excess_hi``
            (over the base width's), ``n_censored, n_diverged_at_base``,
            ``lr_max, lr_max_lo, lr_max_hi, edge_limited, n_edge_limited`` and diagnostics
            (``spacing, n_seeds, n_lr, n_diverged, refined, at_edge``).
        groups: one row per keys: ``base_width, lr_star_base, drift_exponent, drift_lo, drift_hi,
            max_regret, regret_lo, regret_hi`` (the largest excess regret), ``base_regret`` (the noise
            floor), ``edge_exponent, edge_lo, edge_hi, edge_limited_widths, censored_widths,
            diverged_at_base_widths, n_seeds, level, wider_better_frac, wider_better_rho, verdict,
            verdict_reason, own_verdict, control_verdict`` (and ``held_out_*`` from :func:`analyze_logs`).
        curves: mean loss over seeds per (keys, width, lr), the data of the plots.
        table: the tidy per-trial table the numbers came from.
        metric, mode: the objective; ``loss`` in ``table`` is the metric (``min``) or its
            negative (``max``), +inf for diverged trials.
        max_drift, max_regret: the verdict's thresholds.
        level: the confidence level of every interval.
        notes: what was assumed or left out.
        held_out: the same analysis on the held-out metric (:func:`analyze_logs`), or None.
    """

    keys: list[str]
    per_width: pd.DataFrame
    groups: pd.DataFrame
    curves: pd.DataFrame
    table: pd.DataFrame
    metric: str
    mode: str
    max_drift: float
    max_regret: float
    level: float = LEVEL
    notes: list[str] = field(default_factory=list)
    held_out: TransferResult | None = None


# ---- the tidy table ------------------------------------------------------------------
def group_keys(trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Group columns: GROUP_KEYS, plus every other config column with more than one value.

    Returns:
        ``(keys, notes)``: the notes name each extra key, so that nothing is averaged silently.
    """
    keys, notes = list(GROUP_KEYS), []
    for col in trials.columns:
        if col in NOT_KEYS or col in keys:
            continue
        if trials[col].astype(str).nunique() > 1:
            keys.append(col)
            notes.append(
                f"{col} varies across trials ({', '.join(map(str, sorted(trials[col].astype(str).unique())))}): "
                "kept as a group key, not averaged"
            )
    return keys, notes


def tidy(
    trials: pd.DataFrame, metric: str = DEFAULT_OBJECTIVE_METRIC, mode: str = DEFAULT_MODE
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per usable trial: group keys, width, lr, seed, status and ``loss`` (to minimise).

    ``loss`` is ``metric`` (mode ``min``) or ``−metric`` (mode ``max``); diverged trials, and
    ok trials whose metric is not finite, get ``loss = +inf``; failed trials are dropped.

    Returns:
        ``(table, keys, notes)``.

    Raises:
        ValueError: ``mode`` not in ``min, max``, or ``metric`` not a numeric column.
    """
    loss_sign = sign(mode)  # ValueError when mode is neither min nor max
    numeric = [c for c in trials.columns if c.startswith("final_") and pd.api.types.is_numeric_dtype(trials[c])]
    if metric not in numeric:
        raise ValueError(f"metric={metric!r} is not one of {', '.join(numeric) or '(no final_* column)'}")
    t = trials.copy()
    for col in GROUP_KEYS:
        if col not in t.columns:
            t[col] = "-"
    if "seed" not in t.columns:
        t["seed"] = 0
    notes = []
    failed = t.status == "failed"
    if failed.any():
        notes.append(f"{int(failed.sum())} failed trial(s) left out (an error, not a divergence)")
    t = t[~failed].copy()
    keys, key_notes = group_keys(t)
    value = t[metric].astype(float) * loss_sign
    bad = counts_as_diverged(t.status, value)
    t["loss"] = value.where(~bad, np.inf)
    t["diverged"] = bad
    t["log2_lr"] = np.log2(t.lr.astype(float))
    cols = [*keys, "width", "lr", "log2_lr", "seed", "trial_id", "status", "diverged", "loss"]
    cols += ["base_width"] if "base_width" in t.columns and "base_width" not in keys else []
    table = t[cols].sort_values([*keys, *AXES]).reset_index(drop=True)
    return table, keys, notes + key_notes


def _mean_curve(grid: np.ndarray) -> np.ndarray:
    """Mean over seeds (columns) ignoring missing cells; +inf if any present cell diverged."""
    if not grid.shape[1]:
        return np.full(grid.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an lr with no seed at all: NaN
        return np.nanmean(grid, axis=1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return np.nan
    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- one group -------------------------------------------------------------------------
def _seed_curves(gw: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each seed's own curve at one width: sorted log2 η and the mean loss there (+inf where diverged)."""
    seed, x, loss = gw.seed.to_numpy(), gw.log2_lr.to_numpy(float), gw.loss.to_numpy(float)
    out = {}
    for s in np.unique(seed):
        m = seed == s
        xs, inv = np.unique(x[m], return_inverse=True)
        out[s.item() if hasattr(s, "item") else s] = (xs, np.bincount(inv, loss[m]) / np.bincount(inv))
    return out


def _width_stats(gw: pd.DataFrame) -> dict:
    """Per-seed curves, optima and stability edges at one width (dicts keyed by seed)."""
    curves = _seed_curves(gw)
    opts = {s: optimum(x, loss) for s, (x, loss) in curves.items()}
    edges = {s: stability_edge(x, loss) for s, (x, loss) in curves.items()}
    best = [float(loss[np.isfinite(loss)].min()) for _, loss in curves.values() if np.isfinite(loss).any()]
    return {
        "curves": curves,
        "opts": opts,
        "x": {s: o.x for s, o in opts.items()},
        "stable": {s: e[0] if np.isfinite(e[1]) else np.nan for s, e in edges.items()},
        "edge_known": all(np.isfinite(e[1]) for e in edges.values()),
        "n_seeds": len(curves),
        "best_loss": float(np.mean(best)) if best else np.inf,
        "n_diverged": int(gw.diverged.sum()),
        "n_lr": int(gw.log2_lr.nunique()),
    }


def _matrix(st: dict, widths: list[int], field: str, seeds: list) -> np.ndarray:
    """seeds × widths of a per-seed value (NaN where a seed was not measured)."""
    return np.array([[st[w][field].get(s, np.nan) for w in widths] for s in seeds], float)


def _seed_regrets(st: dict, w: int, x0: dict | float) -> dict:
    """Each seed's regret at width ``w`` at log2 η = ``x0`` (one value, or one per seed)."""
    s_w = st[w]
    at = (lambda s: x0.get(s, np.nan)) if isinstance(x0, dict) else (lambda s: x0)
    return {s: seed_regret(*s_w["curves"][s], s_w["opts"][s], at(s)) for s in s_w["curves"]}


def _loo_excesses(st: dict, others: list[int], base_width: int, seeds: list) -> np.ndarray:
    """Per width of ``others``, the mean over ``seeds`` of r_sw − r_s,base, each seed judged at the mean
    base optimum of the *other* seeds of ``seeds`` (the base width's regrets computed once)."""
    loo = leave_one_out({s: st[base_width]["x"][s] for s in seeds})
    at_base = _seed_regrets(st, base_width, loo)
    return np.array([summarize(excess(_seed_regrets(st, w, loo), at_base), LEVEL)[0] for w in others], float)


def _excess_bounds(st: dict, widths: list[int], base_width: int, level: float) -> dict[int, tuple[float, float]]:
    """Per width, the jackknife t interval of the excess regret over seeds.

    The estimate is the leave-one-seed-out excess; the jackknife leaves each seed out of the whole
    computation (its base optimum and its curves), so the interval carries the base η*'s own error,
    which every seed's regret shares. The lower bound is simultaneous over the other widths.
    """
    seeds = [s for s in st[base_width]["x"] if all(s in st[w]["curves"] for w in widths)]
    others = [w for w in widths if w != base_width]
    out = {base_width: (0.0, 0.0)}
    n = len(seeds)
    if n < 3:
        return {**out, **{w: (np.nan, np.nan) for w in others}}
    est = _loo_excesses(st, others, base_width, seeds)
    reps = np.array([_loo_excesses(st, others, base_width, [s for s in seeds if s != j]) for j in seeds])
    lo_t = t_quantile(1.0 - (1.0 - level) / max(1, len(others)), n - 1)
    for i, w in enumerate(others):
        e, r = est[i], reps[:, i]
        if not (np.isfinite(e) and np.isfinite(r).all()):
            out[w] = (np.inf, np.inf) if np.isposinf(e) and np.isposinf(r).all() else (np.nan, np.nan)
            continue
        se = float(np.sqrt((n - 1) / n * ((r - r.mean()) ** 2).sum()))
        out[w] = (e - lo_t * se, e + t_quantile(level, n - 1) * se)
    return out


def _regret_rows(st: dict, widths: list[int], base_width: int, level: float) -> list[dict]:
    """Per width: the measured regret at the leave-one-seed-out base η*, its excess over the base
    width's (the point estimate), and bounds that hold for the true base optimum."""
    loo = leave_one_out(st[base_width]["x"])
    per = {w: _seed_regrets(st, w, loo) for w in widths}
    bounds = _excess_bounds(st, widths, base_width, level)
    rows = []
    for w in widths:
        raw = np.array([r.value for r in per[w].values()], float)
        mean, lo, hi = summarize(raw, level)
        e = 0.0 if w == base_width else summarize(excess(per[w], per[base_width]), level)[0]
        elo, ehi = bounds[w]
        if np.isfinite(e):  # the point estimate lies within its bounds
            elo, ehi = (min(elo, e) if np.isfinite(elo) else elo), (max(ehi, e) if not np.isnan(ehi) else ehi)
        rows.append(
            {
                "regret": mean,
                "regret_lo": lo,
                "regret_hi": hi,
                "excess_regret": e,
                "excess_lo": elo,
                "excess_hi": ehi,
                "n_censored": int(sum(r.censored for r in per[w].values())),
                "n_diverged_at_base": int(np.isposinf(raw).sum()),
            }
        )
    return rows


def _width_row(w: int, s: dict, level: float) -> dict:
    """η* and η_max of one width with their t intervals over seeds, and the diagnostics."""
    x, lo, hi = mean_interval(np.array(list(s["x"].values()), float), level)
    edge, elo, ehi = (
        mean_interval(np.array(list(s["stable"].values()), float), level) if s["edge_known"] else (np.nan,) * 3
    )
    opts = list(s["opts"].values())
    n_limited = sum(o.edge_limited for o in opts)
    return {
        "width": w,
        "lr_star": 2**x,
        "lr_star_lo": 2**lo,
        "lr_star_hi": 2**hi,
        "best_loss": s["best_loss"],
        "lr_max": 2**edge,
        "lr_max_lo": 2**elo,
        "lr_max_hi": 2**ehi,
        "edge_limited": bool(2 * n_limited > len(opts)),
        "n_edge_limited": int(n_limited),
        "spacing": float(np.nanmax([o.spacing for o in opts])) if opts else np.nan,
        "n_seeds": s["n_seeds"],
        "n_lr": s["n_lr"],
        "n_diverged": s["n_diverged"],
        "refined": bool(opts) and all(o.refined for o in opts),
        "at_edge": any(o.at_edge for o in opts),
    }


def _max_regret(rows: list[dict], base_width: int) -> tuple[float, float, float]:
    """The largest excess regret over the other widths, and [max lower bound, max upper bound]."""
    other = [r for r in rows if r["width"] != base_width]
    if not other:
        return np.nan, np.nan, np.nan
    e = np.array([r["excess_regret"] for r in other], float)
    if np.isnan(e).any():
        return np.nan, np.nan, np.nan
    lo = np.array([r["excess_lo"] for r in other], float)
    hi = np.array([r["excess_hi"] for r in other], float)
    return float(e.max()), float(np.max(lo)), float(np.max(hi))  # NaN in a bound propagates


def _analyze_group(
    g: pd.DataFrame, base_width: int | None, level: float
) -> tuple[list[dict], dict, list[dict], list[str]]:
    """Per width: η*, η_max and regret with t intervals over seeds; per group: k and k_edge (per-seed
    slopes, t over seeds), and the largest excess regret with its jackknife interval."""
    widths = [int(w) for w in sorted(g.width.unique())]
    notes = []
    if base_width is None or base_width not in widths:
        if base_width is not None:
            notes.append(f"base_width {base_width} is not among the widths {widths}: the smallest is the base")
        base_width = widths[0]
    st = {int(w): _width_stats(gw) for w, gw in g.groupby("width", sort=True)}
    seeds = sorted({s for w in widths for s in st[w]["curves"]})
    base_x = np.array(list(st[base_width]["x"].values()), float)
    x_base = float(np.nanmean(base_x)) if np.isfinite(base_x).any() else np.nan
    n_seeds = min(st[w]["n_seeds"] for w in widths)
    regrets = _regret_rows(st, widths, base_width, level)
    rows = [{**_width_row(w, st[w], level), **r, "base_width": base_width} for w, r in zip(widths, regrets)]
    lw = np.log2(np.array(widths, float))
    k, lo, hi, _ = seed_slopes(_matrix(st, widths, "x", seeds), lw, level)
    edges = _matrix(st, widths, "stable", seeds)
    for j, w in enumerate(widths):
        if not st[w]["edge_known"]:
            edges[:, j] = np.nan  # a width whose edge some seed never reached: censored, left out
    known = all(st[w]["edge_known"] for w in widths)
    k_edge, elo, ehi, _ = seed_slopes(edges, lw, level) if known else (np.nan,) * 4
    max_regret, rlo, rhi = _max_regret(rows, base_width)
    curves = [
        {"width": w, "lr": float(2**xi), "loss": float(li), "n_finite_seeds": int(nf), "n_seeds": st[w]["n_seeds"]}
        for w in widths
        for xi, li, nf in _mean_curve_rows(st[w]["curves"])
    ]
    frac, rho_base = _wider_better(curves, x_base)
    notes += _group_notes(rows, n_seeds, len(widths))
    group = {
        "base_width": base_width,
        "lr_star_base": 2**x_base,
        "drift_exponent": k,
        "drift_lo": lo,
        "drift_hi": hi,
        "max_regret": max_regret,
        "regret_lo": rlo,
        "regret_hi": rhi,
        "base_regret": rows[widths.index(base_width)]["regret"],
        "edge_exponent": k_edge,
        "edge_lo": elo,
        "edge_hi": ehi,
        "edge_limited_widths": ",".join(str(r["width"]) for r in rows if r["edge_limited"]),
        "censored_widths": ",".join(f"{r['width']}:{r['n_censored']}" for r in rows if r["n_censored"]),
        "diverged_at_base_widths": ",".join(
            f"{r['width']}:{r['n_diverged_at_base']}" for r in rows if r["n_diverged_at_base"]
        ),
        "n_seeds": n_seeds,
        "level": level,
        "wider_better_frac": frac,
        "wider_better_rho": rho_base,
        "n_widths": len(widths),
    }
    return rows, group, curves, notes


def _regret_note(group: dict) -> str:
    """Why the excess regret or its interval is missing or infinite, from the group's counts."""
    notes = []
    if group["n_seeds"] < 3:
        notes.append("one seed" if group["n_seeds"] == 1 else "its jackknife needs three seeds")
    if group["diverged_at_base_widths"]:
        base = str(group["base_width"])
        at_base = any(p.split(":")[0] == base for p in group["diverged_at_base_widths"].split(","))
        notes.append(
            f"seeds diverged at the base η* (width:seeds {group['diverged_at_base_widths']}"
            + (", the base width itself: its noise floor is infinite)" if at_base else ")")
        )
    if group["censored_widths"]:
        notes.append(
            f"base η* censored between a seed's last stable and first diverged lr at width:seeds {group['censored_widths']}"
        )
    return "; ".join(notes)


def _group_notes(rows: list[dict], n_seeds: int, n_widths: int) -> list[str]:
    notes = []
    if n_seeds < 2:
        notes.append(
            "one seed: k's interval is the least-squares one, η* has none, and regret has none, so "
            "regret can decide neither 'transfers' nor 'drifts'"
            + (" (undefined with 2 widths)" if n_widths < 3 else "")
        )
    limited = [r["width"] for r in rows if r["edge_limited"]]
    if limited:
        notes.append(
            f"η* is edge-limited at width(s) {limited}: the next larger lr diverged, so η* there "
            "marks the stability edge rather than the bottom of the loss"
        )
    ends = [r["width"] for r in rows if r["at_edge"]]
    if ends:
        notes.append(f"best learning rate at the end of the grid at width(s) {ends}: η* is censored there")
    return notes


def _mean_curve_rows(curves: dict[int, tuple[np.ndarray, np.ndarray]]):
    """(log2 η, mean loss over the seeds measured there, finite seeds) at one width, from its seed curves."""
    xs = np.unique(np.concatenate([x for x, _ in curves.values()])) if curves else np.array([])
    cells = np.full((len(xs), len(curves)), np.nan)
    for j, (x, loss) in enumerate(curves.values()):
        cells[np.searchsorted(xs, x), j] = loss
    return zip(xs, _mean_curve(cells), np.isfinite(cells).sum(axis=1))


def _wider_better(curves: list[dict], x_base: float) -> tuple[float, float]:
    """At each lr measured at two widths or more: is the mean loss rank-anticorrelated with width?

    Returns the fraction of such lrs where it is, and the rank correlation at the lr nearest η*_base.
    """
    means: dict[float, dict[int, float]] = {}
    for c in curves:
        means.setdefault(round(float(np.log2(c["lr"])), 6), {})[c["width"]] = c["loss"]
    rhos = {
        xi: _spearman(np.array(list(m), float), np.array(list(m.values()), float))
        for xi, m in means.items()
        if len(m) >= 2 and np.isfinite(list(m.values())).any()
    }
    vals = np.array([v for v in rhos.values() if np.isfinite(v)])
    frac = float((vals < 0).mean()) if len(vals) else np.nan
    rho_base = rhos[min(rhos, key=lambda xi: abs(xi - x_base))] if rhos and np.isfinite(x_base) else np.nan
    return frac, rho_base


def held_out_metric(metric: str, columns) -> tuple[str, str] | None:
    """The held-out metric judged beside the objective: ``final_test_loss`` (min), or
    ``final_test_acc`` (max) when the objective is the test loss; None when the table has neither."""
    for name, mode in (("final_test_loss", "min"), ("final_test_acc", "max")):
        if name != metric and name in columns:
            return name, mode
    return None


def logs_level(verify: dict) -> float:
    """The confidence level of each look of the verify that wrote ``verify`` (sweep.yaml's section).

    An adaptive verify looks once per entry of its seed schedule; a sweep, or a verify without
    ``max_seeds``, looks once (95 %)."""
    if "seeds" not in verify:
        return LEVEL
    schedule = seed_schedule(int(verify["seeds"]), verify.get("max_seeds"), int(verify.get("seed_step", 3)))
    return look_level(len(schedule))


def analyze_logs(
    logs, n_boot: int | None = None, metric: str | None = None, mode: str | None = None, held_out: bool = True
) -> TransferResult:
    """:func:`analyze` of a sweep read by :func:`analysis.load.load_sweep`, with its own objective,
    verify thresholds and level (``sweep.yaml``); ``metric`` and ``mode`` replace the objective's when
    given. With ``held_out``, the verdict on :func:`held_out_metric` too (``result.held_out``, and
    ``held_out_*`` columns in ``result.groups``). ``n_boot`` is ignored (the intervals are t intervals)."""
    metric = metric or logs.objective["metric"]
    kw = {
        "max_drift": logs.verify["max_drift"],
        "max_regret": logs.verify["max_regret"],
        "level": logs_level(logs.verify),
    }
    result = analyze(logs.trials, metric=metric, mode=mode or logs.objective["mode"], **kw)
    other = held_out_metric(metric, logs.trials.columns) if held_out else None
    if other is not None and np.isfinite(pd.to_numeric(logs.trials[other[0]], errors="coerce")).any():
        result.held_out = analyze(logs.trials, metric=other[0], mode=other[1], **kw)
        _attach_held_out(result)
    return result


def _attach_held_out(result: TransferResult) -> None:
    """``held_out_metric, held_out_verdict, held_out_k, held_out_k_lo, held_out_k_hi`` per group."""
    h = result.held_out.groups
    cols = {"drift_exponent": "held_out_k", "drift_lo": "held_out_k_lo", "drift_hi": "held_out_k_hi"}
    part = h[[*result.keys, "verdict", *cols]].rename(columns={"verdict": "held_out_verdict", **cols})
    merged = result.groups.merge(part, on=result.keys, how="left")
    merged.insert(merged.columns.get_loc("held_out_verdict"), "held_out_metric", result.held_out.metric)
    result.groups = merged


def analyze(
    trials: pd.DataFrame,
    metric: str = DEFAULT_OBJECTIVE_METRIC,
    mode: str = DEFAULT_MODE,
    max_drift: float = 0.2,
    max_regret: float = 0.05,
    level: float = LEVEL,
) -> TransferResult:
    """The transfer analysis of a sweep's trials.

    Args:
        trials: trials.parquet's table (one row per trial).
        metric: the ``final_*`` column that defines "optimal".
        mode: ``min`` or ``max``.
        max_drift: largest |drift exponent| of a ``transfers`` verdict.
        max_regret: largest excess regret of a ``transfers`` verdict.
        level: confidence level of every interval (:func:`analysis.stats.look_level` for an adaptive design).

    Returns:
        The :class:`TransferResult`.

    Raises:
        ValueError: bad ``metric``, ``mode`` or ``level``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    table, keys, notes = tidy(trials, metric, mode)
    per_rows, group_rows, curve_rows = [], [], []
    for gkey, g in table.groupby(keys, dropna=False, sort=True):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        label = dict(zip(keys, gkey))
        bw = None
        if "base_width" in g.columns:
            sub = g.base_width.dropna().unique()
            bw = int(sub[0]) if len(sub) == 1 else None
        rows, group, curves, gnotes = _analyze_group(g, bw, level)
        per_rows += [{**label, **r} for r in rows]
        curve_rows += [{**label, **c} for c in curves]
        v, why = verdict(
            group["drift_exponent"],
            group["drift_lo"],
            group["drift_hi"],
            group["max_regret"],
            group["regret_lo"],
            group["regret_hi"],
            max_drift,
            max_regret,
            edge_limited=group["edge_limited_widths"],
            regret_note=_regret_note(group),
        )
        group_rows.append({**label, **group, "verdict": v, "verdict_reason": why})
        name = "/".join(str(v) for v in gkey)
        notes += [f"{name}: {n}" for n in gnotes]
    groups = apply_controls(pd.DataFrame(group_rows), keys)
    return TransferResult(
        keys=keys,
        per_width=pd.DataFrame(per_rows),
        groups=groups,
        curves=pd.DataFrame(curve_rows),
        table=table,
        metric=metric,
        mode=mode,
        max_drift=max_drift,
        max_regret=max_regret,
        level=level,
        notes=notes,
    )
