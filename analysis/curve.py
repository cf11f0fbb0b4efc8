"""The optimum of one loss curve L(x), x = log2 η: a quadratic fit around the best grid point.

x̂ = −b / (2a) of the least-squares parabola a x² + b x + c through the best grid point and
its two neighbours on each side when those five span at most an octave (else, or when a
second neighbour is missing or diverged, one on each side;
the grid point itself when a first neighbour is missing or diverged, or the parabola is not
convex), kept between the best point's neighbours; diverged points are L = +inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Five points are fitted only when they span at most one octave (sub-octave refinement): over a wider
# span the loss is not a parabola (a cliff two octaves away would drag the fit).
FIVE_POINT_SPAN = 1.0 + 1e-9


@dataclass
class Optimum:
    """The optimum of one loss curve L(x), x = log2 η.

    Attributes:
        x: log2 η* (NaN when every point diverged).
        loss: the loss at the optimum (the parabola's minimum when refined, else the grid's).
        refined: the quadratic fit was used.
        at_edge: the best grid point is the smallest or largest η of the grid (η* is censored).
        coef: the parabola's coefficients (highest power first) and its x range, when refined.
        edge_limited: the next larger η measured diverged: the optimum sits at the stability
            edge, so η* says where training breaks down rather than where the loss is lowest.
        spacing: the log2 distance from the best point to its nearest measured neighbour
            (the resolution of η*; NaN with one point).
    """

    x: float
    loss: float
    refined: bool
    at_edge: bool
    coef: tuple | None = None
    edge_limited: bool = False
    spacing: float = float("nan")


def optimum(x: np.ndarray, loss: np.ndarray) -> Optimum:
    """The optimum of a loss curve by a quadratic fit around its best grid point.

    x̂ = −b / (2a) of the least-squares parabola a x² + b x + c through the best point and up
    to two neighbours on each side, kept between its first neighbours; the grid point itself when a first
    neighbour is missing, diverged (+inf), or the parabola is not convex.

    Args:
        x: sorted log2 learning rates.
        loss: the loss at each, +inf where diverged.

    Returns:
        The :class:`Optimum`.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    finite = np.isfinite(loss)
    if not finite.any():
        return Optimum(np.nan, np.inf, False, False)
    i = int(np.argmin(np.where(finite, loss, np.inf)))
    at_edge = i == 0 or i == len(x) - 1
    edge_limited = i + 1 < len(x) and not finite[i + 1]
    gaps = [x[i] - x[i - 1]] if i > 0 else []
    gaps += [x[i + 1] - x[i]] if i + 1 < len(x) else []
    spacing = float(min(gaps)) if gaps else np.nan
    if at_edge or not (finite[i - 1] and finite[i + 1]):
        return Optimum(float(x[i]), float(loss[i]), False, at_edge, None, edge_limited, spacing)
    lo, hi = i - 1, i + 2
    if i >= 2 and i + 2 < len(x) and finite[i - 2] and finite[i + 2] and x[i + 2] - x[i - 2] <= FIVE_POINT_SPAN:
        lo, hi = i - 2, i + 3  # five close points: a least-squares parabola, less at the mercy of one noisy point
    xs, ys = x[lo:hi], loss[lo:hi]
    a, b, c = np.polyfit(xs, ys, 2)
    if not a > 0:
        return Optimum(float(x[i]), float(loss[i]), False, False, None, edge_limited, spacing)
    near = (x[i - 1], x[i + 1])  # the parabola is trusted between the best point's neighbours only
    xv = float(np.clip(-b / (2 * a), *near))
    return Optimum(xv, float(np.polyval((a, b, c), xv)), True, False, ((a, b, c), *near), edge_limited, spacing)


def stability_edge(x: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """Where training starts to diverge: ``(last stable x, first diverged x)`` above the best point.

    The first diverged point is the smallest diverged x above the best finite one; the last
    stable point is the largest finite x below it, so η_max lies in [2^stable, 2^diverged).
    ``(largest finite x, NaN)`` when nothing above the best point diverged (the edge is
    censored: it lies beyond the points measured); ``(NaN, NaN)`` when every point diverged.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    finite = np.isfinite(loss)
    if not finite.any():
        return np.nan, np.nan
    best = x[int(np.argmin(np.where(finite, loss, np.inf)))]
    above = x[(~finite) & (x > best)]
    if not len(above):
        return float(x[finite].max()), np.nan
    first = float(above.min())
    return float(x[finite & (x < first)].max()), first


def loss_at(x: np.ndarray, loss: np.ndarray, x0: float, opt: Optimum | None = None) -> float:
    """The loss of a curve at log2 η = x0.

    The optimum's parabola where x0 lies within its fit range, else linear interpolation
    between the grid points around x0 (+inf if one of them diverged); NaN outside the grid.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    if not np.isfinite(x0) or len(x) == 0 or x0 < x[0] - 1e-9 or x0 > x[-1] + 1e-9:
        return np.nan
    if opt is not None and opt.coef is not None and opt.coef[1] - 1e-9 <= x0 <= opt.coef[2] + 1e-9:
        return float(np.polyval(opt.coef[0], x0))
    j = int(np.searchsorted(x, x0))
    if j < len(x) and abs(x[j] - x0) < 1e-9:
        return float(loss[j])
    if j > 0 and abs(x[j - 1] - x0) < 1e-9:
        return float(loss[j - 1])
    lo, hi = loss[j - 1], loss[j]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.inf
    w = (x0 - x[j - 1]) / (x[j] - x[j - 1])
    return float((1 - w) * lo + w * hi)
