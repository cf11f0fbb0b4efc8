"""Did the optimal learning rate transfer across widths? η*, drift exponent, regret, verdict.

Per (algorithm, parametrization, inference_steps, width), from the loss L(η) of each trial
(diverged trials count as L = +inf):

    η* = 2^x*,  x* = argmin of the parabola through (log2 η, mean_seeds L) at the best
                grid point and its two neighbours (the grid point itself when a neighbour
                is missing or diverged, or the parabola is not convex)
    regret(w) = max(0, L_w(η*_base) − min_grid L_w) / |min_grid L_w|
    drift k   = slope of log2 η*(w) against log2 w (least squares)

Intervals come from a bootstrap over seeds (resampled with replacement at each width); the
drift interval is the wider of that bootstrap's and the least-squares 95 % t-interval.
L_w(η*_base) is measured where η*_base is on the grid (as in a verify run), else read off the
parabola (inside its three points) or interpolated linearly. The best loss is the lowest one
measured, not the parabola's minimum: with an asymmetric basin (a cliff next to the optimum)
the parabola's minimum can lie far below every measurement.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .curve import Optimum, loss_at, optimum  # noqa: F401  (re-exported)
from .load import MODES, RESULT_COLUMNS

BASE_KEYS = ("algorithm", "parametrization", "inference_steps")
AXES = ("width", "lr", "seed")
NOT_KEYS = frozenset({"trial_id", "sweep", *AXES, *RESULT_COLUMNS})
VERDICTS = ("transfers", "drifts")
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


@dataclass
class TransferResult:
    """The transfer analysis of a sweep.

    Attributes:
        keys: group columns of a verdict (BASE_KEYS plus every other swept key that varies).
        per_width: one row per (keys, width): ``lr_star, lr_star_lo, lr_star_hi, best_loss``
            (lowest mean loss measured), ``regret`` and diagnostics (``n_seeds, n_lr, n_diverged, refined, at_edge``).
        groups: one row per keys: ``base_width, lr_star_base, drift_exponent, drift_lo,
            drift_hi, max_regret, wider_better_frac, wider_better_rho, verdict, verdict_reason``.
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
            notes.append(f"{col} varies across trials ({', '.join(map(str, sorted(trials[col].astype(str).unique())))}): "
                         "kept as a group key, not averaged")
    return keys, notes


def tidy(trials: pd.DataFrame, metric: str = "final_train_loss", mode: str = "min"
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
    k = float((xc * (y - y.mean())).sum() / (xc ** 2).sum())
    dof = len(x) - 2
    if dof < 1:
        return k, np.nan
    resid = y - y.mean() - k * xc
    se = float(np.sqrt((resid ** 2).sum() / dof / (xc ** 2).sum()))
    return k, se * (_T975[dof - 1] if dof <= len(_T975) else 1.96)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if len(ra) < 2 or np.std(ra) == 0 or np.std(rb) == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- one group -------------------------------------------------------------------------
def _analyze_group(g: pd.DataFrame, base_width: int | None, n_boot: int, rng: np.random.Generator
                   ) -> tuple[list[dict], dict, list[dict], list[str]]:
    widths = sorted(g.width.unique())
    notes = []
    if base_width is None or base_width not in widths:
        if base_width is not None:
            notes.append(f"base_width {base_width} is not among the widths {widths}: the smallest is the base")
        base_width = int(widths[0])
    per, curves, boot = {}, [], {}
    for w in widths:
        gw = g[g.width == w]
        grid = gw.pivot_table(index="log2_lr", columns="seed", values="loss", aggfunc="mean", dropna=False)
        x, cells = grid.index.to_numpy(float), grid.to_numpy(float)
        mean = _mean_curve(cells)
        opt = optimum(x, mean)
        n_seeds = cells.shape[1]
        reps = np.full(n_boot, np.nan)
        for b in range(n_boot):
            reps[b] = optimum(x, _mean_curve(cells[:, rng.integers(0, n_seeds, n_seeds)])).x
        boot[w] = reps
        per[w] = dict(x=x, mean=mean, opt=opt, n_seeds=n_seeds, n_diverged=int(gw.diverged.sum()))
        for xi, li, ni in zip(x, mean, np.isfinite(cells).sum(axis=1)):
            curves.append({"width": int(w), "lr": float(2 ** xi), "loss": float(li),
                           "n_finite_seeds": int(ni), "n_seeds": n_seeds})
    base = per[base_width]["opt"]
    rows = []
    for w in widths:
        p, opt = per[w], per[w]["opt"]
        finite_reps = boot[w][np.isfinite(boot[w])]
        lo, hi = (np.percentile(finite_reps, [2.5, 97.5]) if len(finite_reps) else (np.nan, np.nan))
        at_base = loss_at(p["x"], p["mean"], base.x, opt)
        finite = p["mean"][np.isfinite(p["mean"])]
        best = float(finite.min()) if len(finite) else np.inf
        regret = max(0.0, (at_base - best) / abs(best)) if np.isfinite(best) and best != 0 and not np.isnan(
            at_base) else np.nan
        if w == base_width:
            regret = 0.0 if np.isfinite(best) else np.nan
        rows.append({"width": int(w), "lr_star": 2 ** opt.x, "lr_star_lo": 2 ** lo, "lr_star_hi": 2 ** hi,
                     "best_loss": best, "regret": regret, "base_width": base_width, "n_seeds": p["n_seeds"],
                     "n_lr": len(p["x"]), "n_diverged": p["n_diverged"], "refined": opt.refined,
                     "at_edge": opt.at_edge})
    lw = np.log2(np.array(widths, float))
    xs = np.array([per[w]["opt"].x for w in widths])
    k, half = _slope(lw, xs)
    slopes = np.array([_slope(lw, np.array([boot[w][b] for w in widths]))[0] for b in range(n_boot)])
    slopes = slopes[np.isfinite(slopes)]
    blo, bhi = np.percentile(slopes, [2.5, 97.5]) if len(slopes) else (np.nan, np.nan)
    lo = np.nanmin([blo, k - half]) if np.isfinite(half) or np.isfinite(blo) else np.nan
    hi = np.nanmax([bhi, k + half]) if np.isfinite(half) or np.isfinite(bhi) else np.nan
    regrets = np.array([r["regret"] for r in rows if r["width"] != base_width], float)
    max_regret = float(regrets.max()) if len(regrets) and not np.isnan(regrets).any() else np.nan
    # wider is better: at each learning rate, is loss rank-anticorrelated with width?
    cdf = pd.DataFrame(curves)
    rhos = {}
    for lr, c in cdf.groupby("lr"):
        if len(c) >= 2 and np.isfinite(c.loss).any():
            rhos[lr] = _spearman(c.width.to_numpy(float), c.loss.to_numpy(float))
    rho_vals = np.array([v for v in rhos.values() if np.isfinite(v)])
    frac = float((rho_vals < 0).mean()) if len(rho_vals) else np.nan
    rho_base = np.nan
    if rhos and np.isfinite(base.x):
        near = min(rhos, key=lambda lr: abs(np.log2(lr) - base.x))
        rho_base = rhos[near]
    if max(r["n_seeds"] for r in rows) < 2:
        notes.append("one seed: the bootstrap intervals are points; the drift interval is the least-squares one"
                     + (" (undefined with 2 widths)" if len(widths) < 3 else ""))
    edges = [r["width"] for r in rows if r["at_edge"]]
    if edges:
        notes.append(f"best learning rate at the edge of the grid at width(s) {edges}: η* is censored there")
    group = {"base_width": base_width, "lr_star_base": 2 ** base.x, "drift_exponent": k, "drift_lo": lo,
             "drift_hi": hi, "max_regret": max_regret, "wider_better_frac": frac, "wider_better_rho": rho_base,
             "n_widths": len(widths)}
    return rows, group, curves, notes


def verdict(drift: float, max_regret: float, max_drift: float = 0.2, max_regret_allowed: float = 0.05
            ) -> tuple[str, str]:
    """``transfers`` when |drift| ≤ max_drift and max regret ≤ the allowed regret, else ``drifts``.

    Returns:
        ``(verdict, reason)``; a group whose drift or regret cannot be computed (one width,
        every trial diverged, base η* outside another width's grid) is ``drifts`` with that reason.
    """
    if not np.isfinite(drift):
        return "drifts", "undetermined: drift exponent not computable (fewer than 2 widths with an optimum)"
    if np.isnan(max_regret):
        return "drifts", "undetermined: regret not computable at some width (base η* outside its grid or no optimum)"
    fails = []
    if abs(drift) > max_drift:
        fails.append(f"|drift| {abs(drift):.3f} > {max_drift:g}")
    if max_regret > max_regret_allowed:
        shown = f"{max_regret:.2%}" if np.isfinite(max_regret) else "inf (base η* diverges at some width)"
        fails.append(f"max regret {shown} > {max_regret_allowed:.2%}")
    if fails:
        return "drifts", "; ".join(fails)
    return "transfers", f"|drift| {abs(drift):.3f} <= {max_drift:g} and max regret {max_regret:.2%} <= {max_regret_allowed:.2%}"


def analyze(trials: pd.DataFrame, metric: str = "final_train_loss", mode: str = "min", max_drift: float = 0.2,
            max_regret: float = 0.05, n_boot: int = 200, seed: int = 0) -> TransferResult:
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
        v, why = verdict(group["drift_exponent"], group["max_regret"], max_drift, max_regret)
        group_rows.append({**label, **group, "verdict": v, "verdict_reason": why})
        name = "/".join(str(v) for v in gkey)
        notes += [f"{name}: {n}" for n in gnotes]
    return TransferResult(keys=keys, per_width=pd.DataFrame(per_rows), groups=pd.DataFrame(group_rows),
                          curves=pd.DataFrame(curve_rows), table=table, metric=metric, mode=mode,
                          max_drift=max_drift, max_regret=max_regret, notes=notes)
