"""Small-sample intervals of the verdict: Student's t over seeds, and the level of each look of an
adaptive design.

The unit of replication is the seed. A seed's optima at the different widths are paired (the
same seed id), so the drift exponent is estimated seed by seed: each seed's least-squares slope
k_s of log2 η*_sw against log2 w, and k = mean_s k_s with the t interval on ``S − 1`` degrees of
freedom. The k_s are independent across seeds whatever the noise does across widths (narrow
networks' optima scatter more than wide ones', a seed may be offset at every width), so the
interval holds its level where a pooled model would not: on planted sweeps whose seed noise is
larger at the base width, a seed-blocked model with one pooled variance held the planted k 83 %
of the time, the per-seed slopes 95 % (``docs/CALIBRATION.md``). Per-width quantities (η*, η_max,
regret) are means over seeds with the t interval on ``S − 1`` degrees of freedom.

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


def seed_slopes(y: np.ndarray, x: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, int]:
    """The mean over seeds of each seed's least-squares slope of ``y`` (seeds × widths) on ``x``, with its t interval.

    Cells that are not finite are left out; a seed with fewer than two finite cells at different
    x has no slope. With one slope the interval is that seed's own least-squares t interval on
    ``W − 2`` degrees of freedom.

    Returns:
        ``(k, lo, hi, dof)``; NaN bounds when no degree of freedom is left, all NaN without a slope.
    """
    y = np.atleast_2d(np.asarray(y, float))
    x = np.asarray(x, float)
    fits = []
    for row in y:
        ok = np.isfinite(row)
        if ok.sum() < 2 or np.ptp(x[ok]) == 0:
            continue
        xc = x[ok] - x[ok].mean()
        k = float(xc @ (row[ok] - row[ok].mean()) / (xc @ xc))
        resid = row[ok] - row[ok].mean() - k * xc
        fits.append((k, float(resid @ resid), float(xc @ xc), int(ok.sum())))
    if not fits:
        return np.nan, np.nan, np.nan, 0
    if len(fits) == 1:
        k, ssr, sxx, m = fits[0]
        if m < 3:
            return k, np.nan, np.nan, 0
        half = t_quantile(level, m - 2) * np.sqrt(ssr / (m - 2) / sxx)
        return k, k - half, k + half, m - 2
    k, lo, hi = mean_interval(np.array([f[0] for f in fits]), level)
    return k, lo, hi, len(fits) - 1


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
