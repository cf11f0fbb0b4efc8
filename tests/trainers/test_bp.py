"""BP trainer: the library API of docs/ARCHITECTURE.md (trainers/ layer)."""

import math

import pytest
import torch

from trainers import TrainerConfig, load_fashion_mnist, make_trainer, train


def _batch(n=32, d=12, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def test_update_direction_is_the_negative_gradient_and_not_applied():
    x, y = _batch()
    tr = make_trainer(TrainerConfig(width=32, base_width=16, dtype="float64", depth=4), 12, 4)
    before = {n: p.clone() for n, p in tr.model.named_parameters()}
    d = tr.update_direction(x, y)
    assert sorted(d) == [f"layers.{i}.weight" for i in range(4)]
    # finite difference along the direction: loss decreases at rate ||d||²
    eps = 1e-6
    with torch.no_grad():
        base = float(tr.loss_fn(tr.model(x), tr.targets(y)))
        for n, p in tr.model.named_parameters():
            p.add_(eps * d[n])
        moved = float(tr.loss_fn(tr.model(x), tr.targets(y)))
        for n, p in tr.model.named_parameters():
            p.sub_(eps * d[n])
    rate = (base - moved) / eps
    sq = sum(float((v * v).sum()) for v in d.values())
    assert rate == pytest.approx(sq, rel=1e-4)
    for n, p in tr.model.named_parameters():
        assert torch.equal(p, before[n])


def test_step_applies_per_layer_learning_rates():
    x, y = _batch()
    cfg = TrainerConfig(width=64, base_width=16, dtype="float64", lr=0.01)
    tr = make_trainer(cfg, 12, 4)
    before = {n: p.clone() for n, p in tr.model.named_parameters()}
    d = tr.update_direction(x, y)
    stats = tr.step(x, y)
    assert stats["diverged"] is False and math.isfinite(stats["loss"])
    for n, p in tr.model.named_parameters():
        expected = before[n] + 0.01 * tr.lr_multipliers[n] * d[n]
        torch.testing.assert_close(p, expected)


@pytest.mark.parametrize(
    "fields",
    [
        {"parametrization": "mup", "bias": True},
        {"parametrization": "sp", "loss": "ce", "depth": 4},
        {"model": "cnn", "parametrization": "mup", "bias": True, "width": 8, "base_width": 4},
    ],
    ids=["mlp-mup-bias", "mlp-sp-ce", "cnn-mup-bias"],
)
def test_sgd_updated_during_the_backward_pass_equals_the_optimizer_step(fields):
    """Plain SGD updates each layer inside the backward pass (after its adjoint has used the old
    weight); the weights must equal those of the whole-gradient ``optimizer.step`` path, bit for bit."""
    cfg = TrainerConfig(**{"width": 32, "base_width": 16, "lr": 0.05, "seed": 1, **fields})
    d_in = 196 if cfg.model == "cnn" else 12
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, d_in, generator=g), torch.randint(0, 4, (16,), generator=g)
    fused, whole = make_trainer(cfg, d_in, 4), make_trainer(cfg, d_in, 4)
    whole.update_in_backward = False
    assert fused._sgd_now() is not None
    for _ in range(4):
        a, b = fused.step(x, y), whole.step(x, y)
        assert a == b
    for (n, p), q in zip(fused.model.named_parameters(), whole.model.parameters()):
        assert torch.equal(p, q), n
    moved = make_trainer(cfg, d_in, 4)
    assert any(not torch.equal(p, q) for p, q in zip(fused.model.parameters(), moved.model.parameters()))


def test_adam_keeps_the_optimizer_step():
    cfg = TrainerConfig(width=32, base_width=16, optimizer="adam", lr=1e-3)
    tr = make_trainer(cfg, 12, 4)
    assert tr._sgd_now() is None
    x, y = _batch()
    tr.step(x.float(), y)
    assert all(len(s) > 0 for s in tr.optimizer.state.values())  # Adam's moments were updated by its step


def test_same_seed_same_numbers_and_ce_loss():
    x, y = _batch()
    a = make_trainer(TrainerConfig(seed=3, loss="ce", width=32), 12, 4)
    b = make_trainer(TrainerConfig(seed=3, loss="ce", width=32), 12, 4)
    for _ in range(3):
        sa, sb = a.step(x, y), b.step(x, y)
    assert sa["loss"] == sb["loss"]
    ev = a.evaluate(x, y)
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["loss"] > 0


def test_divergence_is_reported_not_raised():
    x, y = _batch()
    tr = make_trainer(TrainerConfig(width=32, lr=1e6, parametrization="sp", activation="relu"), 12, 4)
    stats = [tr.step(x * 100, y) for _ in range(5)]
    assert any(s["diverged"] for s in stats)


def test_train_loop_stops_at_divergence():
    from trainers import make_teacher_student

    data = make_teacher_student(n_train=256, n_test=64, dtype=torch.float32)
    tr = make_trainer(TrainerConfig(width=64, lr=1e5, parametrization="sp", activation="relu"), 32, 10)
    hist = train(tr, data, epochs=5, batch_size=32)
    assert hist[-1]["diverged"] and len(hist) < 5 and math.isinf(hist[-1]["train_loss"])


def test_device_auto_resolves():
    cfg = TrainerConfig(device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert make_trainer(cfg, 4, 2).model.layers[0].weight.device.type == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, y = _batch()
    cpu = make_trainer(TrainerConfig(dtype="float64", device="cpu", width=64), 12, 4)
    gpu = make_trainer(TrainerConfig(dtype="float64", device="cuda", width=64), 12, 4)
    for _ in range(3):
        cpu.step(x, y), gpu.step(x, y)
    torch.testing.assert_close(gpu.model(x.cuda()).cpu(), cpu.model(x), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_one_epoch_on_10k_fashion_mnist_beats_75_percent():
    data = load_fashion_mnist(subset=10000)
    tr = make_trainer(TrainerConfig(algorithm="bp", parametrization="mup", width=256, lr=0.1), 784, 10)
    hist = train(tr, data, epochs=1, batch_size=128)
    assert hist[-1]["test_acc"] > 0.75, hist
