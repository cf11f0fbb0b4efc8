"""orchestrator.studies.refine: which learning rates verify measures next, and where the rounds end."""

import math

import numpy as np
import pytest

from orchestrator.studies.refine import next_offsets


def _loss(k, opt=0.3, edge=2.6):
    """A parabola in k with its minimum at ``opt``; diverged (+inf) at and above ``edge``."""
    k = np.asarray(k, float)
    return np.where(k >= edge, np.inf, 1.0 + 0.1 * (k - opt) ** 2)


def _rounds(k0, resolution=0.25, step=1.0, limits=(-6, 6), find_edge=True, **kw):
    ks, rounds = set(k0), 0
    while True:
        new = next_offsets(np.array(sorted(ks)), _loss(sorted(ks), **kw), resolution, step, limits, find_edge)
        assert not new & ks, "a round never asks again for a point it has"
        if not new:
            return np.array(sorted(ks)), rounds
        ks |= new
        rounds += 1


def test_rounds_end_with_quarter_octave_points_around_the_optimum_and_the_edge():
    ks, rounds = _rounds([-2, -1, 0, 1, 2])
    loss = _loss(ks)
    best = ks[np.argmin(loss)]
    assert best == 0.25  # the lattice point nearest the planted 0.3
    assert {best - 0.25, best + 0.25} <= set(ks)
    stable, first = ks[np.isfinite(loss)].max(), ks[~np.isfinite(loss)].min()
    assert first - stable == 0.25 and stable < 2.6 <= first
    assert rounds <= 5 and len(ks) <= 5 + 8


def test_an_optimum_beyond_the_bracket_is_followed_by_extensions_within_the_limits():
    ks, _ = _rounds([-2, -1, 0, 1, 2], opt=-4.2, edge=9)
    assert ks.min() == -5 and ks[np.argmin(_loss(ks, opt=-4.2, edge=9))] == -4.25
    ks, _ = _rounds([-2, -1, 0, 1, 2], opt=-4.2, edge=9, limits=(-3, 3))
    assert ks.min() == -3  # stopped at the limit: η* is censored there


def test_edge_search_goes_up_until_something_diverges_and_can_be_switched_off():
    ks, _ = _rounds([-2, -1, 0, 1, 2], edge=4.1)
    loss = _loss(ks, edge=4.1)
    assert ks.max() == 5  # 3, 4 stable, 5 diverged; then bisected to 4 | 4.25
    assert ks[np.isfinite(loss)].max() == 4.0 and ks[~np.isfinite(loss)].min() == 4.25
    ks, _ = _rounds([-2, -1, 0, 1, 2], edge=4.1, find_edge=False)
    assert ks.max() == 2


@pytest.mark.parametrize(
    "k, loss, expected",
    [
        ([], [], set()),
        ([0.0, 1.0], [math.inf, math.inf], {-1.0}),  # all diverged: look lower
        ([-1.0, 0.0, 1.0], [2.0, 1.0, math.inf], {-0.5, 0.5}),  # refine both sides; 0.5 also bisects the edge
        ([-0.25, 0.0, 0.25, 0.5], [1.1, 1.0, 1.05, math.inf], set()),  # done at 1/4 octave
    ],
)
def test_next_offsets_cases(k, loss, expected):
    assert next_offsets(np.array(k), np.array(loss), 0.25, 1.0, (-3, 3)) == expected
