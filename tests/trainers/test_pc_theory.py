"""Closed forms: deep-linear PC fixed point, Gauss-Newton directions, PC→BP with width."""

import pytest
import torch
from torch.func import functional_call, jvp

from trainers import TrainerConfig, make_teacher_student, make_trainer
from trainers._pc import PCTrainer
from trainers._pc_theory import (
    activity_gauss_newton_direction,
    direction_cosines,
    gauss_newton_direction,
    linear_pc_coupling,
    linear_pc_direction,
    linear_pc_fixed_point,
)


def _linear_pc(gbar, width, steps=1800):
    cfg = TrainerConfig(
        algorithm="pc",
        parametrization="mup",
        dtype="float64",
        depth=3,
        width=width,
        activation="linear",
        bias=True,
        gamma_bar_L=gbar,
        inference_steps=steps,
        inference_lr=0.09,
    )
    gammas = (0.7, 1.6, cfg.width_mult ** (-gbar))  # non-uniform hidden γ_l
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(8, 12, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    return PCTrainer(cfg, 12, 5, gammas=gammas), gammas, x, y


@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("gbar", [0.0, -1.0])
def test_linear_inference_reaches_closed_form(gbar, width):
    pc, gammas, x, y = _linear_pc(gbar, width)
    state = pc.infer(x, y)
    closed = linear_pc_fixed_point(pc.model, x, y, gammas)
    for e, c in zip(state["errors"], closed):
        assert float((e - c).norm() / c.norm()) < 1e-9
    # the weight update built from the converged errors matches the closed form's
    d, dc = pc.weight_direction(state), linear_pc_direction(pc.model, x, y, gammas)
    assert max(float((d[k] - dc[k]).norm() / dc[k].norm()) for k in dc) < 1e-9


def test_linear_closed_form_is_not_trivially_bp():
    """Too few inference steps miss the fixed point, and the fixed point is not BP's error."""
    pc, gammas, x, y = _linear_pc(-1.0, 64, steps=20)
    e_L = pc.infer(x, y)["errors"][-1]
    closed = linear_pc_fixed_point(pc.model, x, y, gammas)[-1]
    bp_error = y - pc.model(x).detach()
    assert float((e_L - closed).norm() / closed.norm()) > 1e-4
    assert float((closed - bp_error).norm() / bp_error.norm()) > 0.1


def test_coupling_shrinks_with_width_only_at_gbar_zero():
    norms = {}
    for gbar in (0.0, -1.0):
        for width in (64, 256, 1024):
            pc, gammas, _, _ = _linear_pc(gbar, width)
            norms[gbar, width] = float(torch.linalg.matrix_norm(linear_pc_coupling(pc.model, gammas), 2))
    assert norms[0.0, 1024] < norms[0.0, 256] / 2 < norms[0.0, 64] / 4
    assert norms[-1.0, 1024] > norms[-1.0, 64] / 3


@pytest.mark.parametrize("per_sample", [True, False])
def test_gauss_newton_direction_fits_the_linearised_network(per_sample):
    cfg = TrainerConfig(algorithm="bp", dtype="float64", depth=3, width=48, bias=True)
    model = make_trainer(cfg, 6, 3).model
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4 if not per_sample else 1, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(x.shape[0], 3, generator=gen, dtype=torch.float64)
    d = gauss_newton_direction(model, x, y, per_sample=per_sample)
    params = {k: v.detach() for k, v in model.named_parameters()}
    f, jd = jvp(lambda p: functional_call(model, p, (x,)), (params,), (d,))
    assert torch.allclose(jd, y - f, rtol=1e-8, atol=1e-10)


def test_activity_gauss_newton_with_unit_damping_is_the_linear_pc_equilibrium():
    """λ = 1 reproduces the deep-linear equilibrium errors e*_l (paired with feedforward inputs)."""
    pc, gammas, x, y = _linear_pc(-1.0, 64)
    closed = linear_pc_fixed_point(pc.model, x, y, gammas)
    h = pc.model.preactivations(x)
    inputs = [x] + [t.detach() for t in h[:-1]]
    ref = {f"layers.{l}.weight": gammas[l] / x.shape[0] * e.t() @ inp for l, (e, inp) in enumerate(zip(closed, inputs))}
    d = activity_gauss_newton_direction(pc.model, x, y, gammas, damping=1.0)
    assert max(float((d[k] - ref[k]).norm() / ref[k].norm()) for k in ref) < 1e-10
    d0 = activity_gauss_newton_direction(pc.model, x, y, gammas, damping=0.0)
    d0 = {k: d0[k] for k in ref}
    assert direction_cosines(d0, ref)["all"] < 0.999


def test_direction_cosines():
    a = {"w": torch.tensor([1.0, 0.0]), "v": torch.tensor([0.0, 2.0])}
    b = {"w": torch.tensor([1.0, 1.0]), "v": torch.tensor([0.0, -2.0])}
    c = direction_cosines(a, b)
    assert c["w"] == pytest.approx(2**-0.5) and c["v"] == pytest.approx(-1.0)
    assert c["all"] == pytest.approx((1 - 4) / (5**0.5 * 6**0.5))


def _cos_pc_bp(widths, gbar=0.0, steps=300):
    data = make_teacher_student(n_train=32, n_test=1, seed=7)
    out = []
    for width in widths:
        cfg = TrainerConfig(
            algorithm="pc",
            parametrization="mup",
            dtype="float64",
            depth=3,
            width=width,
            gamma_bar_L=gbar,
            inference_steps=steps,
            inference_lr=0.2,
        )
        pc = make_trainer(cfg, 32, 10)
        bp = make_trainer(cfg.replace(algorithm="bp"), 32, 10)
        bp.model.load_state_dict(pc.model.state_dict())
        c = direction_cosines(
            pc.update_direction(data.x_train, data.y_train), bp.update_direction(data.x_train, data.y_train)
        )
        out.append(c["layers.2.weight"])
    return out


def test_cos_pc_bp_rises_with_width_small():
    cos = _cos_pc_bp((64, 128, 256), steps=200)
    gaps = [1 - c for c in cos]
    assert gaps[0] > 2 * gaps[1] > 4 * gaps[2] > 0, cos


@pytest.mark.slow
def test_cos_pc_bp_rises_with_width():
    """γ̄_L = 0, converged inference: 1 − cos(PC, BP) of the output layer falls ≥ 2× per doubling, 64→1024."""
    cos = _cos_pc_bp((64, 128, 256, 512, 1024))
    gaps = [1 - c for c in cos]
    assert all(a > 2 * b for a, b in zip(gaps, gaps[1:])), cos
    assert cos[-1] > 0.995


def test_update_stays_away_from_the_gradient_at_gbar_minus_one():
    """Converged linear PC, seeds 0, 1, widths 128–2048: at γ̄_L = −1, 1 − cos(PC, BP) stays ≥ 0.04 and
    levels off (measured 0.085 → 0.053 over 128 → 2048); at γ̄_L = 0 it falls ≥ 8× per 4× width."""
    from trainers import loglog_slope, pc_geometry

    widths = (128, 512, 2048)
    t = pc_geometry(
        widths=widths, gamma_bar_Ls=(0.0, -1.0), steps=("inf",), networks=("linear",), seeds=(0, 1), batch_size=32
    )
    gap = 1 - t[t.layer == "all"].groupby(["gamma_bar_L", "width"]).cos_bp.mean()
    far, near = gap.loc[-1.0], gap.loc[0.0]
    assert (far > 0.04).all(), far
    assert far.loc[2048] > 0.8 * far.loc[512], far  # no longer falling
    assert all(a > 8 * b for a, b in zip(near, near.iloc[1:])), near
    assert loglog_slope(list(widths), list(near)) < -1.5 < -0.3 < loglog_slope(list(widths), list(far)), (near, far)
