"""analysis.curve: the optimum of one loss curve by a quadratic fit, and the loss at a given η."""

import numpy as np
import pytest

from analysis.curve import loss_at, optimum


def test_optimum_recovers_the_vertex_of_a_parabola_off_the_grid():
    x = np.arange(-6.0, 3.0)
    opt = optimum(x, 0.3 + 0.1 * (x + 2.37) ** 2)
    assert opt.refined and not opt.at_edge
    assert opt.x == pytest.approx(-2.37, abs=1e-9)
    assert opt.loss == pytest.approx(0.3, abs=1e-9)


def test_optimum_falls_back_to_the_grid_point_at_the_edge_or_next_to_a_divergence():
    x = np.arange(0.0, 5.0)
    edge = optimum(x, np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert edge.x == 0.0 and edge.at_edge and not edge.refined
    cliff = optimum(x, np.array([0.5, 0.4, 0.3, 0.2, np.inf]))  # best point next to a diverged one
    assert cliff.x == 3.0 and not cliff.refined and not cliff.at_edge
    assert np.isnan(optimum(x, np.full(5, np.inf)).x)


def test_loss_at_uses_the_parabola_inside_its_range_and_inf_across_a_divergence():
    x = np.arange(0.0, 5.0)
    y = 1.0 + (x - 1.5) ** 2
    y[4] = np.inf
    opt = optimum(x, y)
    assert loss_at(x, y, 1.5, opt) == pytest.approx(1.0)
    assert loss_at(x, y, 3.5, opt) == np.inf
    assert np.isnan(loss_at(x, y, 7.0, opt))
