"""Where to measure next: sub-octave refinement of each seed's optimum, and the stability edge.

verify measures, for each grid point (group, width, seed), the loss at learning rates
η*_base · 2^k. After each round it asks :func:`next_offsets` which k to add:

- **extend**: the best finite point is the lowest k (add k − step) or the highest k, which
  did not diverge (add k + step), within ``limits``; and, to find the stability edge, while
  nothing above the best point diverged, add k_max + step (``verify.find_edge``);
- **refine**: a neighbour of the best point lies more than ``resolution`` away: add the
  midpoint (1 → ½ → ¼ octave), so η* comes from points ``resolution`` apart;
- **edge**: the last stable k and the first diverged k above the best point are more than
  ``resolution`` apart: add their midpoint, so η_max is located to the same resolution.

Every new k is a midpoint of two measured ones (or one step beyond the ends), so a rerun
asks for the same trials: the rounds are idempotent and resumable through the sweep path.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-6


def next_offsets(
    k: np.ndarray,
    loss: np.ndarray,
    resolution: float,
    step: float,
    limits: tuple[float, float] = (-math.inf, math.inf),
    find_edge: bool = True,
) -> set[float]:
    """The offsets to measure next for one curve.

    Args:
        k: log2(η / η*_base) of the points measured (any order).
        loss: their loss, +inf where the trial diverged.
        resolution: the finest spacing wanted around the optimum and the edge (log2 units).
        step: the spacing of an extension beyond the ends of the measured range.
        limits: the lowest and highest k an extension may reach.
        find_edge: when nothing above the best point diverged, extend upwards by ``step`` until
            something does (within ``limits``), so that the stability edge can be located.

    Returns:
        New offsets (rounded to 1e-6), empty when this curve is done.
    """
    order = np.argsort(k)
    k, loss = np.asarray(k, float)[order], np.asarray(loss, float)[order]
    finite = np.isfinite(loss)
    if not len(k):
        return set()
    if not finite.any():
        low = k[0] - step
        return {round(float(low), 6)} if low >= limits[0] - EPS else set()
    i = int(np.argmin(np.where(finite, loss, np.inf)))
    if i == 0 and k[0] - step >= limits[0] - EPS:
        return {round(float(k[0] - step), 6)}
    if i == len(k) - 1 and k[-1] + step <= limits[1] + EPS:
        return {round(float(k[-1] + step), 6)}
    above = k[(~finite) & (k > k[i])]
    if find_edge and not len(above) and k[-1] + step <= limits[1] + EPS:
        return {round(float(k[-1] + step), 6)}
    new = set()
    for j in (i - 1, i + 1):
        if 0 <= j < len(k) and abs(k[j] - k[i]) > resolution + EPS:
            new.add(round(float((k[i] + k[j]) / 2), 6))
    if len(above):
        first = above.min()
        stable = k[finite & (k < first)].max()
        if first - stable > resolution + EPS:
            new.add(round(float((stable + first) / 2), 6))
    return new
