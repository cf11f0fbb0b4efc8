"""TP trainer: DTP with difference correction behind the library API."""

import math

import pytest
import torch

from trainers import TrainerConfig, load_fashion_mnist, make_trainer, train
from trainers._layers import Dense
from trainers._tp_feedback import drl_grad, ridge_solution


def _batch(n=32, d=12, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def _tp(**kw):
    base = dict(algorithm="tp", width=32, base_width=32, dtype="float64", target_step=0.5)
    base.update(kw)
    return TrainerConfig(**base)


def test_dtp_targets_are_gauss_newton_in_a_linear_invertible_network():
    """Exact inverse feedback: δ_k = −β (J_kᵀJ_k)^{-1} J_kᵀ ∂loss/∂h_L, J_k = ∂h_L/∂h_k (float64, 1e-6)."""
    n, depth, beta = 8, 4, 0.5
    tr = make_trainer(_tp(width=n, base_width=4, depth=depth, activation="linear", target_step=beta), n, n)
    model = tr.model
    with torch.no_grad():
        for k in range(1, depth):
            tr.feedback[f"g{k}"].weight.copy_(torch.linalg.inv(model.layers[k].weight * model.multipliers[k]).T)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, n, generator=g, dtype=torch.float64), torch.randn(16, n, generator=g, dtype=torch.float64)
    deltas = tr.target_differences(x, y)

    hs = [h.detach() for h in model.preactivations(x)]
    out = hs[-1].clone().requires_grad_(True)
    (grad_out,) = torch.autograd.grad(tr.loss_fn(out, y), out)

    def head(h, k):  # h_k -> h_L through the forward layers above k
        for j in range(k + 1, depth):
            h = model.layers[j](model.phi(h)) * model.multipliers[j]
        return h

    for k in range(depth - 1):
        jac = torch.autograd.functional.jacobian(lambda h: head(h, k), hs[k][:1])[0, :, 0, :]
        gn = -beta * torch.linalg.solve(jac.T @ jac, jac.T @ grad_out.T).T
        rel = float((deltas[k] - gn).norm() / gn.norm())
        assert rel < 1e-6, (k, rel)
        backprop = -beta * grad_out @ jac  # the gradient direction differs: the check can fail
        assert float((deltas[k] - backprop).norm() / gn.norm()) > 0.1
    torch.testing.assert_close(deltas[-1], -beta * grad_out)


def test_difference_correction_gives_zero_targets_at_zero_error():
    """Random (non-inverse) feedback: with y = f(x) every δ_k and every direction is exactly 0."""
    tr = make_trainer(_tp(), 12, 4)
    x, _ = _batch()
    with torch.no_grad():
        y = tr.model(x)
    assert all(float(d.abs().max()) == 0.0 for d in tr.target_differences(x, y))
    assert all(float(d.abs().max()) == 0.0 for d in tr.update_direction(x, y).values())


def test_output_direction_is_beta_times_bp_and_names_match_bp():
    x, y = _batch()
    tp = make_trainer(_tp(bias=True), 12, 4)
    bp = make_trainer(_tp(bias=True, algorithm="bp"), 12, 4)
    assert tp.model.state_dict().keys() == bp.model.state_dict().keys()
    bp.model.load_state_dict(tp.model.state_dict())  # forward layers load between trainers
    d_tp, d_bp = tp.update_direction(x, y), bp.update_direction(x, y)
    assert sorted(d_tp) == sorted(d_bp) == sorted(n for n, _ in tp.model.named_parameters())
    torch.testing.assert_close(d_tp["layers.2.weight"], 0.5 * d_bp["layers.2.weight"])
    torch.testing.assert_close(d_tp["layers.2.bias"], 0.5 * d_bp["layers.2.bias"])
    assert not torch.allclose(d_tp["layers.0.weight"], 0.5 * d_bp["layers.0.weight"])
    assert not any(n.startswith("layers.") for n, _ in tp.feedback.named_parameters())


def test_direction_is_the_local_loss_negative_gradient():
    """Each layer's direction is −∂/∂W_k of ½Σ||h_k − ĥ_k||² with its input detached (autograd)."""
    x, y = _batch()
    tr = make_trainer(_tp(width=64, parametrization="mup", depth=4), 12, 4)
    d = tr.update_direction(x, y)
    targets = [h + dh for h, dh in zip(tr.model.preactivations(x), tr.target_differences(x, y))]
    inp = x
    for k, layer in enumerate(tr.model.layers):
        h = layer(inp.detach()) * tr.model.multipliers[k]
        local = 0.5 * (h - targets[k].detach()).pow(2).sum()
        (grad,) = torch.autograd.grad(local, layer.weight)
        torch.testing.assert_close(d[f"layers.{k}.weight"], -grad)
        inp = tr.model.phi(h)


def test_step_trains_feedback_then_forward_layers_with_their_learning_rates():
    x, y = _batch()
    cfg = _tp(width=128, base_width=64, parametrization="mup", lr=0.05, feedback_lr=0.02)
    a, b = make_trainer(cfg, 12, 4), make_trainer(cfg, 12, 4)
    assert a.lr_multipliers == {"layers.0.weight": 1.0, "layers.1.weight": 0.5, "layers.2.weight": 0.5}
    assert a.feedback_lr_multipliers == {"g1.weight": 0.5, "g2.weight": 1.0}
    assert [g["lr"] for g in a.feedback_optimizer.param_groups] == [0.01, 0.02]
    before = {n: p.clone() for n, p in a.model.named_parameters()}
    fb_before = {n: p.clone() for n, p in a.feedback.named_parameters()}
    stats = a.step(x, y)
    assert stats["diverged"] is False and math.isfinite(stats["loss"]) and stats["feedback_loss"] > 0
    b.update_feedback(x)  # same seed, same noise: the step's feedback update
    d = b.update_direction(x, y)
    for n, p in a.model.named_parameters():
        torch.testing.assert_close(p, before[n] + 0.05 * a.lr_multipliers[n] * d[n])
    for n, p in a.feedback.named_parameters():
        torch.testing.assert_close(p, dict(b.feedback.named_parameters())[n])
        assert not torch.equal(p, fb_before[n])


def test_learned_linear_feedback_approaches_the_drl_minimiser():
    """SGD on the DRL closes most of the gap to its closed-form minimiser (the floor is > 0: a
    C-dim image cannot reconstruct n-dim noise)."""
    x, _ = _batch(n=64)
    cfg = _tp(feedback="linear", feedback_lr=0.5, feedback_steps=20, feedback_noise=0.3)
    tr = make_trainer(cfg, 12, 4)
    first = tr.update_feedback(x)["feedback_loss"]
    for _ in range(10):
        last = tr.update_feedback(x)["feedback_loss"]
    best = make_trainer(cfg.replace(feedback="regression_drl", feedback_ridge=0.0, feedback_steps=50), 12, 4)
    best.update_feedback(x)
    floor = best.update_feedback(x)["feedback_loss"]  # the minimiser's loss on a fresh draw
    assert floor < last < first
    assert last - floor < 0.25 * (first - floor), (first, last, floor)


def test_learned_tanh_feedback_lowers_its_drl():
    x, _ = _batch(n=64)
    tr = make_trainer(_tp(feedback="tanh", feedback_lr=0.5, feedback_steps=20, feedback_noise=0.3), 12, 4)
    first = tr.update_feedback(x)["feedback_loss"]
    for _ in range(10):
        last = tr.update_feedback(x)["feedback_loss"]
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("s, n_out", [(20, 50), (50, 20)])
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_ridge_solution_is_the_penalised_minimiser(s, n_out, ridge):
    g = torch.Generator().manual_seed(0)
    u, e = torch.randn(s, n_out, generator=g, dtype=torch.float64), torch.randn(s, 7, generator=g, dtype=torch.float64)
    q = ridge_solution(u, e, ridge)
    assert q.shape == (n_out, 7)  # shaped like the dense forward weight 7 -> n_out it inverts
    grad = drl_grad(Dense(7, n_out).double(), q, u, e)[1] + ridge * q
    assert float(grad.abs().max()) < 1e-10
    if ridge == 0 and s < n_out:  # interpolation: the minimum-norm exact fit
        torch.testing.assert_close(u @ q, e)


@pytest.mark.parametrize("kind", ["regression", "regression_drl"])
def test_regression_feedback_is_set_in_closed_form(kind):
    x, y = _batch()
    tr = make_trainer(_tp(feedback=kind, feedback_ridge=0.1, feedback_steps=2), 12, 4)
    assert tr.feedback_optimizer is None
    before = tr.feedback["g2"].weight.clone()
    stats = tr.step(x, y)
    assert not stats["diverged"] and not torch.equal(before, tr.feedback["g2"].weight)
    # a second call with the same noise stream solves again, it does not accumulate
    q1 = tr.feedback["g1"].weight.clone()
    tr.update_feedback(x)
    assert float((tr.feedback["g1"].weight - q1).norm() / q1.norm()) < 1.0


def test_divergence_is_reported_and_weights_are_left_untouched():
    x, y = _batch()
    tr = make_trainer(_tp(), 12, 4)
    before = {n: p.clone() for n, p in tr.model.named_parameters()}
    fb_before = {n: p.clone() for n, p in tr.feedback.named_parameters()}
    bad = x.clone()
    bad[0, 0] = float("nan")
    stats = tr.step(bad, y)
    assert stats["diverged"] is True
    for n, p in tr.model.named_parameters():
        assert torch.equal(p, before[n])
    for n, p in tr.feedback.named_parameters():
        assert torch.equal(p, fb_before[n])
    huge = make_trainer(_tp(lr=1e4, target_step=10.0), 12, 4)
    assert any(huge.step(x * 10, y)["diverged"] for _ in range(20))


def test_mup_equals_sp_at_the_base_width_and_keeps_the_standard_output_init():
    sp, mup = make_trainer(_tp(parametrization="sp"), 12, 4), make_trainer(_tp(parametrization="mup"), 12, 4)
    for (_n, p), (_, q) in zip(sp.model.named_parameters(), mup.model.named_parameters()):
        assert torch.equal(p, q)
    for (_n, p), (_, q) in zip(sp.feedback.named_parameters(), mup.feedback.named_parameters()):
        assert torch.equal(p, q)
    assert sp.lr_multipliers == mup.lr_multipliers and sp.beta == mup.beta and sp.ridge == mup.ridge
    wide = make_trainer(_tp(parametrization="mup", width=2048, base_width=32), 12, 4)
    w_out = wide.model.layers[-1].weight
    assert float(w_out.detach().pow(2).mean()) * 2048 == pytest.approx(1.0, rel=0.05)  # 1/fan_in, not 1/(fan_in·m)
    assert wide.ridge == {"g1": pytest.approx(0.01 * 64), "g2": pytest.approx(0.01)}


def test_bad_feedback_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match="feedback='bogus' is not one of linear, tanh, regression"):
        TrainerConfig(algorithm="tp", feedback="bogus")
    with pytest.raises(ValueError, match="feedback_ridge"):
        TrainerConfig(algorithm="tp", feedback_ridge=-1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tp_step_on_cuda_matches_cpu():
    x, y = _batch()
    cfg = _tp(feedback="regression_drl", feedback_noise=1e-9)
    cpu, gpu = make_trainer(cfg, 12, 4), make_trainer(cfg.replace(device="cuda"), 12, 4)
    for _ in range(3):
        assert not gpu.step(x, y)["diverged"]
        cpu.step(x, y)
    assert gpu.model.layers[0].weight.is_cuda and gpu.feedback["g1"].weight.is_cuda
    for (_n, p), (_, q) in zip(cpu.model.named_parameters(), gpu.model.named_parameters()):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_two_epochs_of_tp_mup_on_fashion_mnist_subset():
    """~30-60 s on 2 loaded CPUs: width 256, cross-entropy, lr 0.1, β = 1, learned linear feedback
    (3 DRL steps per batch at feedback lr 0.1). Measured 0.766 and 0.779 (seeds 0, 1); with MSE
    and 1 feedback step at lr 0.03 it reaches only 0.67-0.69, lr 0.1 diverges there."""
    data = load_fashion_mnist(subset=10000)
    cfg = TrainerConfig(
        algorithm="tp",
        parametrization="mup",
        width=256,
        base_width=64,
        loss="ce",
        lr=0.1,
        target_step=1.0,
        feedback="linear",
        feedback_lr=0.1,
        feedback_steps=3,
    )
    history = train(make_trainer(cfg, data.input_dim, data.output_dim), data, epochs=2)
    assert len(history) == 2 and not history[-1]["diverged"]
    assert history[-1]["test_acc"] > 0.70, history
