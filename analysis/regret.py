"""Regret of transferring the base η*: measured at every width, the base width included.

For seed s, η*_base^(−s) is the mean over the *other* seeds of their base-width optima
(leave one seed out), so seed s's own noise is not in the learning rate it is judged at. Then

    r_sw = (L_sw(η*_base^(−s)) − min L_sw) / |min L_sw|

on seed s's curve at width w. At the base width this is the noise floor: what re-tuning with
other seeds costs even when nothing moves. The excess regret of a width is the mean over seeds of
r_sw − r_s,base (paired by seed). Its interval (``analysis.transfer._excess_bounds``) is a
jackknife over seeds: every seed's regret shares the base η*'s error, which a t interval over the
seeds' values would not see.

Where η*_base^(−s) falls between a seed's last stable and first diverged learning rate, whether it
diverges is not known: r_sw is *censored* (left out of the mean, and counted), not +∞. It is +∞
only at or beyond a learning rate that was measured to diverge. With one seed there is nobody to
leave out: η*_base is the seed's own optimum and the base regret is 0 (no noise floor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .curve import Optimum, loss_at
from .stats import mean_interval


@dataclass
class SeedRegret:
    """One seed's regret at one width: ``value`` (NaN when not measurable or censored)."""

    value: float
    censored: bool = False


def leave_one_out(base_x: dict[int, float]) -> dict[int, float]:
    """Per seed, the mean of the other seeds' finite base optima (its own when it is alone)."""
    finite = {s: x for s, x in base_x.items() if np.isfinite(x)}
    total, n = sum(finite.values()), len(finite)
    out = {}
    for s, x in base_x.items():
        if s in finite and n > 1:
            out[s] = (total - x) / (n - 1)
        elif s not in finite and n:
            out[s] = total / n
        else:
            out[s] = x
    return out


def seed_regret(x: np.ndarray, loss: np.ndarray, opt: Optimum, x0: float) -> SeedRegret:
    """The relative regret of the curve ``(x, loss)`` at log2 η = ``x0`` (censored between a stable and a diverged point)."""
    finite = loss[np.isfinite(loss)]
    if not len(finite):
        return SeedRegret(np.inf)
    best = float(finite.min())
    at = loss_at(x, loss, x0, opt)
    if np.isnan(at) or best == 0:
        return SeedRegret(np.nan)
    if np.isinf(at):
        j = int(np.searchsorted(x, x0))
        on_point = (j < len(x) and abs(x[j] - x0) < 1e-9) or (j > 0 and abs(x[j - 1] - x0) < 1e-9)
        if not on_point and 0 < j < len(x) and (np.isfinite(loss[j - 1]) or np.isfinite(loss[j])):
            return SeedRegret(np.nan, censored=True)
        return SeedRegret(np.inf)
    return SeedRegret(max(0.0, (at - best) / abs(best)))


def summarize(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean and t interval of per-seed regrets; +∞ when a seed diverged at the base η*.

    Every seed +∞: ``(inf, inf, inf)``; some: ``(inf, nan, inf)`` (the lower bound is unknown).
    """
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    if np.isneginf(v).any():
        return np.nan, np.nan, np.nan
    if np.isposinf(v).any():
        return (np.inf, np.inf, np.inf) if np.isposinf(v).all() else (np.inf, np.nan, np.inf)
    return mean_interval(v, level)


def excess(at_w: dict[int, SeedRegret], at_base: dict[int, SeedRegret]) -> np.ndarray:
    """Per seed measured at both widths: r_sw − r_s,base (NaN where either is not measurable)."""
    out = []
    for s, r in at_w.items():
        b = at_base.get(s)
        if b is None or np.isnan(r.value) or np.isnan(b.value):
            continue
        if np.isinf(r.value) and np.isinf(b.value):
            continue  # diverged at the base η* at both widths: no excess to measure
        out.append(r.value - b.value)
    return np.array(out, float)
