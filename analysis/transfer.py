"""Did the optimal learning rate transfer across widths? η*, the stability edge, drift, regret, verdict.

Per group (algorithm, parametrization, inference_steps and every other varying key) and width,
from each seed's own loss curve L(η) (diverged trials count as L = +inf):

    x*_s       = argmin of a parabola in log2 η around the seed's best point (analysis.curve.optimum)
    η*(w)      = 2^mean_s x*_s
    η_max(w)   = 2^mean_s (last stable log2 η below the first diverged one), when every seed diverged
    edge-limited: the next larger η of the best point diverged at most seeds
    regret(w)  = mean_s max(0, L_ws(η*_base) − min L_ws) / |min L_ws|
    drift k    = slope of log2 η*(w) against log2 w (least squares); k_edge the same for η_max

Intervals are percentiles of a bootstrap over seeds, resampled at each width; with one seed, k's
interval is the least-squares 95 % t-interval and η* and regret have none. L_ws(η*_base) is read
off the seed's parabola between the best point's neighbours, else interpolated linearly. The best
loss is the lowest one measured, not the parabola's minimum: with an asymmetric basin (a cliff
next to the optimum) the parabola's minimum can lie far below every measurement. The verdict is
:mod:`analysis.verdict`'s.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .curve import Optimum, loss_at, optimum, stability_edge  # noqa: F401  (re-exported)
from .schema import DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC, MODES, RESULT_COLUMNS
from .verdict import VERDICTS, apply_controls, verdict  # noqa: F401  (re-exported)

BASE_KEYS = ("algorithm", "parametrization", "inference_steps")
AXES = ("width", "lr", "seed")
NOT_KEYS = frozenset({"trial_id", "sweep", *AXES, *RESULT_COLUMNS})
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


@dataclass
class TransferResult:
    """The transfer analysis of a sweep.

    Attributes:
        keys: group columns of a verdict (BASE_KEYS plus every other swept key that varies).
        per_width: one row per (keys, width): ``lr_star, lr_star_lo, lr_star_hi, best_loss``
            (mean over seeds of the lowest loss measured), ``regret, regret_lo, regret_hi``,
            ``lr_max, lr_max_lo, lr_max_hi, edge_limited, n_edge_limited`` and diagnostics
            (``spacing, n_seeds, n_lr, n_diverged, refined, at_edge``).
        groups: one row per keys: ``base_width, lr_star_base, drift_exponent, drift_lo, drift_hi,
            max_regret, regret_lo, regret_hi, edge_exponent, edge_lo, edge_hi, edge_limited_widths,
            n_seeds, wider_better_frac, wider_better_rho, verdict, verdict_reason, control_verdict``.
        curves: mean loss over seeds per (keys, width, lr), the data of the plots.
        table: the tidy per-trial table the numbers came from.
        metric, mode: the objective; ``loss`` in ``table`` is the metric (``min``) or its
            negative (``max``), +inf for diverged trials.
        max_drift, max_regret: the verdict's thresholds.
        notes: what was assumed or left out.
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
    notes: list[str] = field(default_factory=list)


# ---- the tidy table ------------------------------------------------------------------
def group_keys(trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Group columns: BASE_KEYS, plus every other config column with more than one value.

    Returns:
        ``(keys, notes)``: the notes name each extra key, so that nothing is averaged silently.
    """
    keys, notes = list(BASE_KEYS), []
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
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    numeric = [c for c in trials.columns if c.startswith("final_") and pd.api.types.is_numeric_dtype(trials[c])]
    if metric not in numeric:
        raise ValueError(f"metric={metric!r} is not one of {', '.join(numeric) or '(no final_* column)'}")
    t = trials.copy()
    for col in BASE_KEYS:
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
    value = t[metric].astype(float) * (1.0 if mode == "min" else -1.0)
    bad = (t.status == "diverged") | ~np.isfinite(value)
    t["loss"] = value.where(~bad, np.inf)
    t["diverged"] = bad
    t["log2_lr"] = np.log2(t.lr.astype(float))
    cols = [*keys, "width", "lr", "log2_lr", "seed", "trial_id", "status", "diverged", "loss"]
    table = t[cols].sort_values([*keys, "width", "lr", "seed"]).reset_index(drop=True)
    return table, keys, notes + key_notes


def _mean_curve(grid: np.ndarray) -> np.ndarray:
    """Mean over seeds (columns) ignoring missing cells; +inf if any present cell diverged."""
    if not grid.shape[1]:
        return np.full(grid.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an lr with no seed at all: NaN
        return np.nanmean(grid, axis=1)


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its 95 % t half-width (NaN with < 3 points)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0:
        return np.nan, np.nan
    xc = x - x.mean()
    k = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    dof = len(x) - 2
    if dof < 1:
        return k, np.nan
    resid = y - y.mean() - k * xc
    se = float(np.sqrt((resid**2).sum() / dof / (xc**2).sum()))
    return k, se * (_T975[dof - 1] if dof <= len(_T975) else 1.96)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if len(ra) < 2 or np.std(ra) == 0 or np.std(rb) == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- one group -------------------------------------------------------------------------
def _seed_curves(gw: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each seed's own curve at one width: sorted log2 η and the loss (+inf where diverged)."""
    out = {}
    for s, gs in gw.groupby("seed"):
        c = gs.groupby("log2_lr").loss.mean()
        out[s] = (c.index.to_numpy(float), c.to_numpy(float))
    return out


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the finite ``values`` (NaN if none)."""
    v = values[np.isfinite(values)]
    if not len(v) or n_boot <= 0:
        return np.full(max(n_boot, 0), np.nan)
    return v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)


def _interval(reps: np.ndarray) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    return tuple(float(v) for v in np.percentile(reps, [2.5, 97.5])) if len(reps) else (np.nan, np.nan)


def _exponent(lw: np.ndarray, point: np.ndarray, reps: np.ndarray, n_seeds: int) -> tuple[float, float, float]:
    """Slope of log2 η against log2 width, with its 95 % interval.

    The interval is the bootstrap's over seeds (``reps``: replicates × widths) when every width
    has at least two seeds, else the least-squares t-interval of the point estimates.
    """
    k, half = _slope(lw, point)
    if n_seeds >= 2 and reps.ndim == 2 and len(reps):
        ok = np.isfinite(reps).all(axis=1)
        if ok.sum() >= 10:
            xc = lw - lw.mean()
            slopes = (reps[ok] - reps[ok].mean(axis=1, keepdims=True)) @ xc / (xc**2).sum()
            lo, hi = np.percentile(slopes, [2.5, 97.5])
            return k, float(min(lo, k)), float(max(hi, k))
    return k, k - half, k + half


def _regrets(curves: dict, opts: dict, x_base: float) -> np.ndarray:
    """Per seed: (L(η*_base) − min L) / |min L| on that seed's curve (NaN where not measurable)."""
    out = []
    for s, (x, loss) in curves.items():
        finite = loss[np.isfinite(loss)]
        best = float(finite.min()) if len(finite) else np.inf
        at = loss_at(x, loss, x_base, opts[s])
        ok = np.isfinite(best) and best != 0 and not np.isnan(at)
        out.append(max(0.0, (at - best) / abs(best)) if ok else np.nan)
    return np.array(out, float)


def _width_stats(gw: pd.DataFrame) -> dict:
    """Per-seed optima and stability edges at one width."""
    curves = _seed_curves(gw)
    opts = {s: optimum(x, loss) for s, (x, loss) in curves.items()}
    edges = [stability_edge(x, loss) for x, loss in curves.values()]
    best = [float(loss[np.isfinite(loss)].min()) for _, loss in curves.values() if np.isfinite(loss).any()]
    return {
        "curves": curves,
        "opts": opts,
        "x": np.array([o.x for o in opts.values()], float),
        "stable": np.array([e[0] if np.isfinite(e[1]) else np.nan for e in edges], float),
        "edge_known": all(np.isfinite(e[1]) for e in edges),
        "n_seeds": len(curves),
        "best_loss": float(np.mean(best)) if best else np.inf,
        "n_diverged": int(gw.diverged.sum()),
        "n_lr": int(gw.log2_lr.nunique()),
    }


def _width_row(
    w: int, s: dict, x_base: float, is_base: bool, n_boot: int, rng: np.random.Generator
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """The per-width row, and the bootstrap replicates of log2 η*, log2 η_max and regret."""
    multi = s["n_seeds"] >= 2
    bx = _boot_means(s["x"], n_boot, rng)
    be = _boot_means(s["stable"], n_boot, rng) if s["edge_known"] else np.full(n_boot, np.nan)
    x = float(np.nanmean(s["x"])) if np.isfinite(s["x"]).any() else np.nan
    edge = float(np.mean(s["stable"])) if s["edge_known"] and len(s["stable"]) else np.nan
    reg = np.zeros(s["n_seeds"]) if is_base else _regrets(s["curves"], s["opts"], x_base)
    regret = float(np.mean(reg)) if len(reg) and not np.isnan(reg).any() else np.nan
    br = _boot_means(reg, n_boot, rng) if np.isfinite(regret) else np.full(n_boot, np.nan)
    lo, hi = _interval(bx) if multi and n_boot else (x, x)
    elo, ehi = _interval(be) if multi and n_boot and s["edge_known"] else (edge, edge)
    rlo, rhi = (
        _interval(br) if multi and n_boot and np.isfinite(regret) else (regret, regret) if multi else (np.nan, np.nan)
    )
    opts = list(s["opts"].values())
    n_limited = sum(o.edge_limited for o in opts)
    row = {
        "width": w,
        "lr_star": 2**x,
        "lr_star_lo": 2**lo,
        "lr_star_hi": 2**hi,
        "best_loss": s["best_loss"],
        "regret": regret,
        "regret_lo": rlo,
        "regret_hi": rhi,
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
    return row, bx, be, br


def _analyze_group(
    g: pd.DataFrame, base_width: int | None, n_boot: int, rng: np.random.Generator
) -> tuple[list[dict], dict, list[dict], list[str]]:
    """Per width: η* (the mean of the seeds' optima), η_max and regret; per group: k, k_edge, max regret.

    Each seed's optimum comes from its own curve (each seed can be refined around its own best
    point); intervals are percentiles of a bootstrap over seeds, resampled at each width.
    """
    widths = [int(w) for w in sorted(g.width.unique())]
    notes = []
    if base_width is None or base_width not in widths:
        if base_width is not None:
            notes.append(f"base_width {base_width} is not among the widths {widths}: the smallest is the base")
        base_width = widths[0]
    st = {w: _width_stats(g[g.width == w]) for w in widths}
    x_base = float(np.nanmean(st[base_width]["x"])) if np.isfinite(st[base_width]["x"]).any() else np.nan
    n_seeds = min(st[w]["n_seeds"] for w in widths)
    rows, boot_x, boot_edge, boot_regret = [], [], [], []
    for w in widths:
        row, bx, be, br = _width_row(w, st[w], x_base, w == base_width, n_boot, rng)
        rows.append({**row, "base_width": base_width})
        boot_x.append(bx)
        boot_edge.append(be)
        if w != base_width:
            boot_regret.append(br)
    lw = np.log2(np.array(widths, float))
    k, lo, hi = _exponent(lw, np.log2([r["lr_star"] for r in rows]), np.array(boot_x).T, n_seeds)
    edge = np.log2([r["lr_max"] for r in rows])
    k_edge, elo, ehi = (
        _exponent(lw, edge, np.array(boot_edge).T, n_seeds) if np.isfinite(edge).all() else (np.nan, np.nan, np.nan)
    )
    regrets = np.array([r["regret"] for r in rows if r["width"] != base_width], float)
    max_regret = float(regrets.max()) if len(regrets) and not np.isnan(regrets).any() else np.nan
    rlo = rhi = max_regret if n_seeds >= 2 else np.nan  # one seed: a regret without an interval
    if n_seeds >= 2 and n_boot and boot_regret and np.isfinite(max_regret):
        rlo, rhi = _interval(np.array(boot_regret).max(axis=0))
        rlo, rhi = min(rlo, max_regret), max(rhi, max_regret)
    curves = [
        {"width": w, "lr": float(2**xi), "loss": float(li), "n_finite_seeds": int(nf), "n_seeds": st[w]["n_seeds"]}
        for w in widths
        for xi, li, nf in _mean_curve_rows(g[g.width == w])
    ]
    frac, rho_base = _wider_better(curves, x_base)
    notes += _group_notes(rows, n_seeds, len(widths))
    limited = [r["width"] for r in rows if r["edge_limited"]]
    group = {
        "base_width": base_width,
        "lr_star_base": 2**x_base,
        "drift_exponent": k,
        "drift_lo": lo,
        "drift_hi": hi,
        "max_regret": max_regret,
        "regret_lo": rlo,
        "regret_hi": rhi,
        "edge_exponent": k_edge,
        "edge_lo": elo,
        "edge_hi": ehi,
        "edge_limited_widths": ",".join(map(str, limited)),
        "n_seeds": n_seeds,
        "wider_better_frac": frac,
        "wider_better_rho": rho_base,
        "n_widths": len(widths),
    }
    return rows, group, curves, notes


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


def _mean_curve_rows(gw: pd.DataFrame):
    """(log2 η, mean loss over the seeds measured there, finite seeds) at one width."""
    grid = gw.pivot_table(index="log2_lr", columns="seed", values="loss", aggfunc="mean", dropna=False)
    cells = grid.to_numpy(float)
    return zip(grid.index.to_numpy(float), _mean_curve(cells), np.isfinite(cells).sum(axis=1))


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


def analyze_logs(logs, n_boot: int = 200, metric: str | None = None, mode: str | None = None) -> TransferResult:
    """:func:`analyze` of a sweep read by :func:`analysis.load.load_sweep`, with its own objective and
    verify thresholds (``sweep.yaml``); ``metric`` and ``mode`` replace the objective's when given."""
    return analyze(
        logs.trials,
        metric=metric or logs.objective["metric"],
        mode=mode or logs.objective["mode"],
        max_drift=logs.verify["max_drift"],
        max_regret=logs.verify["max_regret"],
        n_boot=n_boot,
    )


def analyze(
    trials: pd.DataFrame,
    metric: str = DEFAULT_OBJECTIVE_METRIC,
    mode: str = DEFAULT_MODE,
    max_drift: float = 0.2,
    max_regret: float = 0.05,
    n_boot: int = 200,
    seed: int = 0,
) -> TransferResult:
    """The transfer analysis of a sweep's trials.

    Args:
        trials: trials.parquet's table (one row per trial).
        metric: the ``final_*`` column that defines "optimal".
        mode: ``min`` or ``max``.
        max_drift: largest |drift exponent| of a ``transfers`` verdict.
        max_regret: largest relative regret of a ``transfers`` verdict.
        n_boot: bootstrap replicates over seeds.
        seed: seed of the bootstrap.

    Returns:
        The :class:`TransferResult`.

    Raises:
        ValueError: bad ``metric`` or ``mode``.
    """
    table, keys, notes = tidy(trials, metric, mode)
    rng = np.random.default_rng(seed)
    per_rows, group_rows, curve_rows = [], [], []
    for gkey, g in table.groupby(keys, dropna=False, sort=True):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        label = dict(zip(keys, gkey))
        bw = None
        if "base_width" in trials.columns:
            sub = trials.loc[trials.trial_id.isin(g.trial_id), "base_width"].dropna().unique()
            bw = int(sub[0]) if len(sub) == 1 else None
        rows, group, curves, gnotes = _analyze_group(g, bw, n_boot, rng)
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
        notes=notes,
    )
