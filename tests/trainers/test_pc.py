"""PC trainer: exact BP limit, switches, output energies, divergence, tables, the training step."""

import math

import pytest
import torch

from trainers import TrainerConfig, load_fashion_mnist, make_trainer, resolve_table, train
from trainers._pc import PCTrainer

EXACT = dict(pc_init="forward", fixed_prediction=True, sequential_inference=True)


def _pair(cfg, d=16, c=5):
    pc = make_trainer(cfg, d, c)
    bp = make_trainer(cfg.replace(algorithm="bp"), d, c)
    bp.model.load_state_dict(pc.model.state_dict())
    return pc, bp


def _batch(d=16, c=5, b=8, seed=0, labels=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=gen) if labels else torch.randn(b, c, generator=gen, dtype=torch.float64)
    return x, y


def _max_rel_err(a, b):
    return max(float((a[k] - b[k]).norm() / b[k].norm()) for k in b)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_exact_conditions_give_bp_gradient(loss):
    cfg = TrainerConfig(
        algorithm="pc", dtype="float64", depth=4, width=96, activation="tanh", bias=True, loss=loss, **EXACT
    )
    pc, bp = _pair(cfg)
    x, y = _batch(labels=loss == "ce")
    a, b = pc.update_direction(x, y), bp.update_direction(x, y)
    assert set(a) == set(b) == {f"layers.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert _max_rel_err(a, b) < 1e-6


def test_exact_conditions_scale_by_gamma_L():
    """At γ̄_L = −1 and m = 4 the update is γ_L = 4 times BP's gradient."""
    cfg = TrainerConfig(algorithm="pc", dtype="float64", depth=4, width=256, gamma_bar_L=-1.0, **EXACT)
    pc, bp = _pair(cfg)
    assert pc.gammas == (1.0, 1.0, 1.0, 4.0)
    x, y = _batch()
    a, b = pc.update_direction(x, y), bp.update_direction(x, y)
    assert _max_rel_err({k: v / 4.0 for k, v in a.items()}, b) < 1e-6


@pytest.mark.parametrize(
    "change",
    [dict(fixed_prediction=False), dict(sequential_inference=False), dict(pc_init="zero", fixed_prediction=False)],
)
def test_leaving_the_exact_conditions_is_not_bp(change):
    cfg = TrainerConfig(algorithm="pc", dtype="float64", depth=4, width=64, inference_steps=3, **EXACT)
    pc, bp = _pair(cfg.replace(**change))
    x, y = _batch()
    err = _max_rel_err(pc.update_direction(x, y), bp.update_direction(x, y))
    assert 1e-3 < err and math.isfinite(err)


def test_fixed_prediction_sequential_is_bp_from_zero_init_too():
    """Under the fixed prediction assumption the 1/γ_l sweep lands on μ_l + back-error from any start."""
    cfg = TrainerConfig(algorithm="pc", dtype="float64", depth=4, width=64, **dict(EXACT, pc_init="zero"))
    pc, bp = _pair(cfg)
    x, y = _batch()
    assert _max_rel_err(pc.update_direction(x, y), bp.update_direction(x, y)) < 1e-6


def test_fixed_prediction_converges_to_bp():
    """Under the fixed prediction assumption, iterated inference converges to γ_L × BP as well."""
    cfg = TrainerConfig(
        algorithm="pc", dtype="float64", depth=4, width=64, fixed_prediction=True, inference_steps=400, inference_lr=0.2
    )
    pc, bp = _pair(cfg)
    x, y = _batch()
    assert _max_rel_err(pc.update_direction(x, y), bp.update_direction(x, y)) < 1e-8


def _reference_inference(pc, x, target, steps, beta):
    """Plain autograd gradient descent on F (the definition), for checking the explicit arithmetic."""
    model, g = pc.model, pc.gammas
    h = [t.detach() for t in model.preactivations(x)]
    xs = [t.clone() if pc.cfg.pc_init == "forward" else torch.zeros_like(t) for t in h[:-1]]

    def energy(xs):
        inp, total = x, 0.0
        for l, layer in enumerate(model.layers):
            mu = layer(inp) * model.multipliers[l]
            if l < len(xs):
                total = total + g[l] / 2 * (xs[l] - mu).pow(2).sum()
                inp = model.phi(xs[l])
            else:
                total = total + g[l] * pc.loss_fn(mu, target) * x.shape[0]
        return total

    for _ in range(steps):
        xs = [t.detach().requires_grad_(True) for t in xs]
        with torch.enable_grad():
            grads = torch.autograd.grad(energy(xs), xs)
        xs = [t - beta * gr for t, gr in zip(xs, grads)]
    return [t.detach() for t in xs]


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("init", ["forward", "zero"])
def test_explicit_inference_matches_autograd_reference(init, loss):
    cfg = TrainerConfig(
        algorithm="pc",
        dtype="float64",
        depth=5,
        width=32,
        bias=True,
        loss=loss,
        pc_init=init,
        inference_steps=7,
        inference_lr=0.15,
    )
    pc = PCTrainer(cfg, 16, 5, gammas=(0.8, 1.3, 0.6, 1.1, 2.0))
    with torch.no_grad():
        for layer in pc.model.layers:
            layer.bias.normal_(0, 0.1)
    x, y = _batch(labels=loss == "ce")
    target = pc.targets(y)
    got = pc.infer(x, target)["xs"]
    ref = _reference_inference(pc, x, target, 7, 0.15)
    for a, b in zip(got, ref):
        assert float((a - b).norm() / b.norm()) < 1e-12


def test_inference_descends_the_energy():
    cfg = TrainerConfig(algorithm="pc", dtype="float64", depth=4, width=64, inference_lr=0.1)
    x, y = _batch()
    energies = [
        float(make_trainer(cfg.replace(inference_steps=T), 16, 5).infer(x, y)["energy"]) for T in (1, 5, 20, 80)
    ]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_inference_builds_no_autograd_graph():
    cfg = TrainerConfig(algorithm="pc", dtype="float64", depth=3, width=32, inference_steps=3)
    pc = make_trainer(cfg, 16, 5)
    x, y = _batch()
    with torch.enable_grad():
        state = pc.infer(x, pc.targets(y))
        directions = pc.update_direction(x, y)
    tensors = state["xs"] + state["errors"] + list(directions.values())
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)


def test_step_reports_feedforward_loss_and_applies_lr_multipliers():
    cfg = TrainerConfig(
        algorithm="pc",
        parametrization="mup",
        dtype="float64",
        depth=3,
        width=128,
        gamma_bar_L=-1.0,
        lr=0.05,
        inference_steps=4,
    )
    pc = make_trainer(cfg, 16, 5)
    x, y = _batch()
    before = {k: v.detach().clone() for k, v in pc.model.state_dict().items()}
    with torch.no_grad():
        loss0 = float(pc.loss_fn(pc.model(x), pc.targets(y)))
    direction = pc.update_direction(x, y)
    stats = pc.step(x, y)
    assert stats["loss"] == pytest.approx(loss0, rel=1e-12) and not stats["diverged"]
    assert "energy" in stats and math.isfinite(stats["energy"])
    # μP, SGD, γ̄_L = −1 at m = 2: lr exponents 0, −1, −2
    for l, mult in enumerate((1.0, 0.5, 0.25)):
        key = f"layers.{l}.weight"
        moved = pc.model.state_dict()[key] - before[key]
        assert torch.allclose(moved, 0.05 * mult * direction[key], rtol=1e-10, atol=1e-14)


def test_adam_step_runs_and_lowers_loss():
    cfg = TrainerConfig(
        algorithm="pc", optimizer="adam", dtype="float64", depth=3, width=64, lr=1e-3, inference_steps=5
    )
    pc = make_trainer(cfg, 16, 5)
    x, y = _batch(b=32)
    losses = [pc.step(x, y)["loss"] for _ in range(15)]
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("bad", ["lr", "nan"])
def test_divergence_is_reported_not_raised(bad):
    cfg = TrainerConfig(algorithm="pc", depth=3, width=64, lr=1e6 if bad == "lr" else 0.1, inference_steps=5)
    pc = make_trainer(cfg, 16, 5)
    x, y = _batch()
    if bad == "nan":
        x[0, 0] = float("nan")
    diverged = False
    for _ in range(5):
        stats = pc.step(x, y)
        diverged = diverged or stats["diverged"]
    assert diverged
    if bad == "nan":
        assert all(bool(torch.isfinite(p).all()) for p in pc.model.parameters())


def test_tables_and_gammas():
    cfg = TrainerConfig(algorithm="pc", parametrization="mup", width=256, gamma_bar_L=-1.0)
    table = resolve_table(cfg)
    assert (table.input.lr, table.hidden.lr, table.output.lr, table.output.init_var) == (0.0, -1.0, -2.0, -1.0)
    assert table.extra("gamma_output") == 1.0
    with pytest.raises(ValueError, match=r"no pc table for \('mup', 'sgd', -0.5\); valid: .*-1.0"):
        make_trainer(cfg.replace(gamma_bar_L=-0.5), 16, 5)
    with pytest.raises(ValueError, match="gammas"):
        PCTrainer(cfg, 16, 5, gammas=(1.0, 1.0))
    pc = PCTrainer(cfg, 16, 5, gammas=(0.5, 2.0, 3.0))
    assert pc.gammas == (0.5, 2.0, 3.0)


@pytest.mark.slow
def test_two_epochs_fashion_mnist_mup():
    """PC μP (γ̄_L = 0, T = 20, simultaneous inference) on a 10k subset: > 0.75 test accuracy."""
    data = load_fashion_mnist(subset=10000)
    cfg = TrainerConfig(
        algorithm="pc", parametrization="mup", width=256, depth=3, lr=0.1, inference_steps=20, inference_lr=0.1
    )
    history = train(make_trainer(cfg, data.input_dim, data.output_dim), data, epochs=2, batch_size=128)
    assert len(history) == 2 and not history[-1]["diverged"]
    assert history[-1]["test_acc"] > 0.75, history
