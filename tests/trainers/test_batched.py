"""trainers.train_batched: a pack trained as one stacked model returns, per member, the rows that
``trainers.train`` returns for that member alone (its own init, minibatch order and divergence)."""

import math
import time

import pytest
import torch

from trainers import (
    TrainerConfig,
    batchable,
    load_fashion_mnist,
    make_teacher_student,
    make_trainer,
    train,
    train_batched,
)

KEYS = ("epoch", "train_loss", "test_loss", "test_acc", "wall_s", "diverged", "sgd_steps", "matmul_backend")


def _one_by_one(configs, data, epochs, batch_size):
    """Each member as the orchestrator runs a trial: its seed, its trainer, ``train``."""
    out = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        out.append(train(make_trainer(cfg, data.input_dim, data.output_dim), data, epochs, batch_size, seed=cfg.seed))
    return out


def _assert_same(expected, got, rtol):
    assert len(got) == len(expected)
    for member, (rows_e, rows_g) in enumerate(zip(expected, got)):
        assert len(rows_g) == len(rows_e), (member, rows_e[-1], rows_g[-1] if rows_g else None)
        for e, g in zip(rows_e, rows_g):
            assert tuple(g) == KEYS
            assert (g["epoch"], g["sgd_steps"], g["diverged"]) == (e["epoch"], e["sgd_steps"], e["diverged"]), member
            for key in ("train_loss", "test_loss", "test_acc"):
                if math.isnan(e[key]):
                    assert math.isnan(g[key]), (member, key)
                else:
                    assert g[key] == pytest.approx(e[key], rel=rtol), (member, key, e, g)


@pytest.fixture(scope="module")
def fmnist():
    """A pooled Fashion-MNIST subset (7 × 7 inputs), read once for the module."""
    return load_fashion_mnist(subset=320, test_subset=100, pool=4)


def _teacher(dtype=torch.float64):
    return make_teacher_student(n_train=192, n_test=48, input_dim=12, output_dim=3, dtype=dtype)


@pytest.mark.parametrize("algorithm", ["bp", "pc", "tp"])
@pytest.mark.parametrize("parametrization", ["sp", "mup"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_equals_one_by_one_and_a_diverging_member_leaves_alone(algorithm, parametrization, optimizer):
    """Members of different lr and seed (float64, so the arithmetic must be the same, not just close);
    the last member's lr diverges at its first step and the others are not touched by it."""
    base = TrainerConfig(
        algorithm=algorithm,
        parametrization=parametrization,
        optimizer=optimizer,
        width=24,
        base_width=12,
        bias=True,
        dtype="float64",
        device="cpu",
        inference_steps=4,
    )
    lrs = [0.05, 0.2, 1e4] if optimizer == "sgd" else [1e-3, 1e-2, 1e4]
    configs = [base.replace(lr=lr, seed=seed) for lr, seed in zip(lrs, [3, 7, 1])]
    data = _teacher()
    expected = _one_by_one(configs, data, epochs=3, batch_size=32)
    assert expected[-1][-1]["diverged"] and not any(r["diverged"] for h in expected[:-1] for r in h)
    _assert_same(expected, train_batched(configs, data, epochs=3, batch_size=32), rtol=1e-9)


@pytest.mark.parametrize("algorithm", ["bp", "pc", "tp"])
def test_float32_cross_entropy_on_fashion_mnist_and_a_divergence_mid_epoch(algorithm, fmnist):
    """float32, CE, a pooled Fashion-MNIST subset; one member diverges after a few updates (not at its
    first step), so the pack shrinks in the middle of an epoch. ``matmul_backend``: torch's bmm."""
    data = fmnist
    base = TrainerConfig(
        algorithm=algorithm, loss="ce", width=32, base_width=16, device="cpu", inference_steps=4, diverge_loss=5.0
    )
    configs = [base.replace(lr=0.1, seed=0), base.replace(lr=0.3, seed=1), base.replace(lr=200.0, seed=2)]
    expected = _one_by_one(configs, data, epochs=2, batch_size=32)
    assert expected[2][-1]["diverged"] and 0 < expected[2][-1]["sgd_steps"] < 10, expected[2]
    got = train_batched(configs, data, epochs=2, batch_size=32)
    _assert_same(expected, got, rtol=1e-4)
    assert {r["matmul_backend"] for h in got for r in h} == {"torch"}


@pytest.mark.parametrize(
    "fields",
    [{"fixed_prediction": True}, {"sequential_inference": True}, {"pc_init": "zero"}, {"gamma_bar_L": -1.0}],
)
def test_pc_variants_batch(fields):
    base = TrainerConfig(
        algorithm="pc", width=24, base_width=12, dtype="float64", device="cpu", inference_steps=3, **fields
    )
    configs = [base.replace(lr=0.1, seed=0), base.replace(lr=0.03, seed=5)]
    data = _teacher()
    _assert_same(_one_by_one(configs, data, 2, 32), train_batched(configs, data, 2, 32), rtol=1e-9)


def test_tp_tanh_feedback_with_several_feedback_steps_batches():
    """Each member's feedback noise comes from its own generator, draw after draw."""
    base = TrainerConfig(
        algorithm="tp", width=24, base_width=12, dtype="float64", device="cpu", feedback="tanh", feedback_steps=3
    )
    configs = [base.replace(lr=0.1, seed=0), base.replace(lr=0.03, seed=5)]
    data = _teacher()
    _assert_same(_one_by_one(configs, data, 2, 32), train_batched(configs, data, 2, 32), rtol=1e-9)


def test_on_epoch_stops_one_member_and_wall_s_is_a_share_of_the_pack():
    base = TrainerConfig(width=24, base_width=12, dtype="float64", device="cpu")
    configs = [base.replace(lr=0.1, seed=s) for s in range(3)]
    calls = []

    def on_epoch(member, row):
        calls.append((member, row["epoch"]))
        return member == 1  # member 1 stops after its first epoch

    data = _teacher()
    t0 = time.perf_counter()
    got = train_batched(configs, data, epochs=3, batch_size=32, on_epoch=on_epoch)
    elapsed = time.perf_counter() - t0
    assert [len(h) for h in got] == [3, 1, 3]
    assert sorted(calls) == [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1), (2, 2), (2, 3)]
    expected = _one_by_one(configs, data, 3, 32)
    _assert_same([expected[0], expected[1][:1], expected[2]], got, rtol=1e-9)
    for h in got:
        walls = [r["wall_s"] for r in h]
        assert walls == sorted(walls) and walls[0] > 0
    assert sum(h[-1]["wall_s"] for h in got) <= elapsed  # shares of the pack's time, not each the whole


def test_batchable_only_lr_and_seed_may_differ():
    base = TrainerConfig(width=32)
    assert batchable([base, base.replace(lr=0.5, seed=3)])
    assert batchable([base.replace(algorithm="pc")] * 2)
    assert not batchable([])
    assert not batchable([base, base.replace(width=64)])
    assert not batchable([base, base.replace(parametrization="sp")])
    assert batchable([base.replace(algorithm="tp", seed=s) for s in range(2)])
    assert not batchable([base.replace(algorithm="tp", feedback="regression")] * 2)  # closed form: not stacked
    assert not batchable([base.replace(model="cnn")] * 2)
    with pytest.raises(ValueError, match="lr and seed"):
        train_batched([base, base.replace(depth=4)], _teacher(), epochs=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_pack_equals_cpu_pack():
    for algorithm in ("bp", "pc", "tp"):
        base = TrainerConfig(algorithm=algorithm, width=64, base_width=16, inference_steps=4, bias=True)
        configs = [base.replace(lr=lr, seed=s, device="cpu") for lr, s in [(0.05, 0), (0.2, 1), (1e4, 2)]]
        data = _teacher(torch.float32)
        cpu = train_batched(configs, data, epochs=2, batch_size=32)
        gpu = train_batched([c.replace(device="cuda") for c in configs], data, epochs=2, batch_size=32)
        _assert_same(cpu, gpu, rtol=1e-4)
