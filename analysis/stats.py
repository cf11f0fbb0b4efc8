"""Small-sample intervals of the verdict: Student's t on seeds, a seed-blocked slope, and the
level of each look of an adaptive design.

The unit of replication is the seed. A seed's optima at the different widths are paired (the
same seed id, so the same data order and initialisation stream), so the drift exponent is the
common slope of a two-way model with one intercept per seed (seeds are blocks),

    x_sw = μ_s + k · log2 w + ε_sw,      ε_sw ~ N(0, σ²) independent,

fitted by least squares; its interval is ``k ± t_{N − S − 1} · σ̂ / √Σ(log2 w − mean_s)²``
(N cells, S seeds). Per-width quantities (η*, η_max, regret) are means over seeds with the
t interval on ``S − 1`` degrees of freedom. ``docs/CALIBRATION.md`` shows their coverage on
planted sweeps.

An adaptive design that looks at the data after each batch of seeds (``verify`` adds seeds to
undecided groups) would inflate the error rate if each look used 95 %: each look uses
``1 − α / looks`` instead (Bonferroni over the planned looks), so the chance that any look's
interval misses is at most α.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats as _st

LEVEL = 0.95


@lru_cache(maxsize=4096)
def t_quantile(level: float, dof: float) -> float:
    """The two-sided ``level`` quantile of Student's t with ``dof`` degrees of freedom (NaN if dof < 1)."""
    if not dof >= 1:
        return np.nan
    return float(_st.t.ppf(0.5 + level / 2.0, dof))


def mean_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its t interval on ``n − 1`` degrees of freedom.

    Returns:
        ``(mean, lo, hi)``; NaN bounds with fewer than two finite values, all NaN with none.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, np.nan, np.nan
    half = t_quantile(level, len(v) - 1) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return m, m - half, m + half


def blocked_slope(y: np.ndarray, x: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, int]:
    """The common slope of ``y`` (seeds × widths) on ``x`` (widths) with one intercept per seed.

    Cells that are not finite are left out; a seed with fewer than two finite cells says
    nothing about the slope and is left out too. With one seed this is the ordinary
    least-squares slope and its t interval on ``W − 2`` degrees of freedom.

    Returns:
        ``(k, lo, hi, dof)``; NaN bounds when no degree of freedom is left, all NaN when no
        seed has two finite cells at different x.
    """
    y = np.atleast_2d(np.asarray(y, float))
    x = np.asarray(x, float)
    sxy = sxx = 0.0
    cells = seeds = 0
    keep = []
    for row in y:
        ok = np.isfinite(row)
        if ok.sum() < 2 or np.ptp(x[ok]) == 0:
            continue
        xc = x[ok] - x[ok].mean()
        yc = row[ok] - row[ok].mean()
        sxy += float(xc @ yc)
        sxx += float(xc @ xc)
        cells += int(ok.sum())
        seeds += 1
        keep.append((xc, yc))
    if not seeds or sxx == 0:
        return np.nan, np.nan, np.nan, 0
    k = sxy / sxx
    dof = cells - seeds - 1
    if dof < 1:
        return k, np.nan, np.nan, 0
    ssr = sum(float(((yc - k * xc) ** 2).sum()) for xc, yc in keep)
    half = t_quantile(level, dof) * np.sqrt(ssr / dof / sxx)
    return k, k - half, k + half, dof


def seed_schedule(seeds: int, max_seeds: int | None = None, step: int = 3) -> list[int]:
    """The seed counts at which an adaptive ``verify`` looks: ``seeds``, ``seeds + step``, … up to ``max_seeds``.

    ``max_seeds`` missing or at most ``seeds`` (or ``step`` < 1): one look, ``[seeds]``.
    """
    seeds = int(seeds)
    if max_seeds is None or int(max_seeds) <= seeds or int(step) < 1:
        return [seeds]
    out = list(range(seeds, int(max_seeds), int(step)))
    return out + [int(max_seeds)]


def look_level(n_looks: int, level: float = LEVEL) -> float:
    """The confidence level of each of ``n_looks`` looks so that all of them hold with ``level`` (Bonferroni)."""
    return 1.0 - (1.0 - level) / max(1, int(n_looks))
