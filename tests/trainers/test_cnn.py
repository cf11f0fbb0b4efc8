"""The CNN (channels are the width) under BP, PC and TP: shapes, the exact PC limit, and the
coordinate check of every μP table at 16 to 256 channels (|slope| < 0.15; SP's output grows)."""

from __future__ import annotations

import pytest
import torch

from trainers import TrainerConfig, coord_check, make_teacher_student, make_trainer
from trainers._model import CNN, init_net
from trainers._param import resolve_table

WIDTHS = (16, 32, 64, 128, 256)


def _images(n: int, side: int = 8, seed: int = 1234):
    """Teacher-student regression whose d = side² inputs are read as side × side images."""
    return make_teacher_student(n_train=n, n_test=1, input_dim=side * side, seed=seed)


def test_cnn_shapes_on_fashion_mnist_sized_images():
    net = CNN(784, 10, width=16, depth=4)
    shapes = [tuple(layer.weight.shape) for layer in net.layers]
    assert shapes == [(16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16 * 7 * 7)]
    hs = net.preactivations(torch.zeros(2, 784))
    assert [tuple(h.shape) for h in hs] == [(2, 16, 14, 14), (2, 16, 7, 7), (2, 16, 7, 7), (2, 10)]
    assert net.roles == ["input", "hidden", "hidden", "output"]


def test_cnn_needs_square_images():
    with pytest.raises(ValueError, match="input_dim=32 is not a square"):
        make_trainer(TrainerConfig(model="cnn"), 32, 10)


def test_cnn_fan_in_counts_the_kernel():
    cfg = TrainerConfig(model="cnn", parametrization="sp", width=64, depth=3, dtype="float64")
    net = CNN(784, 10, width=64, depth=3).double()
    init_net(net, resolve_table(cfg), cfg.width_mult, seed=0)
    stds = [float(layer.weight.detach().std()) for layer in net.layers]
    for std, fan_in in zip(stds, (9, 64 * 9, 64 * 49)):
        assert abs(std * fan_in**0.5 - 1.0) < 0.05, (stds, fan_in)


@pytest.mark.parametrize("algorithm", ["bp", "pc", "tp"])
def test_mup_equals_sp_at_the_base_width(algorithm):
    data = _images(32)
    base = dict(algorithm=algorithm, model="cnn", width=16, base_width=16, depth=3, dtype="float64")
    sp, mup = (make_trainer(TrainerConfig(parametrization=p, **base), 64, 10) for p in ("sp", "mup"))
    for _ in range(2):
        sp.step(data.x_train, data.y_train), mup.step(data.x_train, data.y_train)
    for (name, a), (_, b) in zip(sp.model.named_parameters(), mup.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("bias", [False, True])
def test_pc_exact_limit_equals_bp_gradient_in_the_cnn(bias):
    """Forward init + fixed prediction + sequential inference: PC's update is BP's negative gradient."""
    data = _images(16, seed=3)
    base = dict(model="cnn", width=8, base_width=4, depth=4, dtype="float64", bias=bias)
    bp = make_trainer(TrainerConfig(algorithm="bp", **base), 64, 10)
    pc = make_trainer(
        TrainerConfig(algorithm="pc", pc_init="forward", fixed_prediction=True, sequential_inference=True, **base),
        64,
        10,
    )
    d_bp, d_pc = bp.update_direction(data.x_train, data.y_train), pc.update_direction(data.x_train, data.y_train)
    assert d_bp.keys() == d_pc.keys() and any("bias" in k for k in d_bp) == bias
    for k in d_bp:
        assert float((d_pc[k] - d_bp[k]).norm() / d_bp[k].norm()) < 1e-6, k


def test_tp_regression_feedback_needs_the_mlp():
    with pytest.raises(ValueError, match="needs model='mlp'"):
        make_trainer(TrainerConfig(algorithm="tp", model="cnn", feedback="regression"), 64, 10)


CASES = [("bp", {}), ("pc", {"gamma_bar_L": 0.0}), ("pc", {"gamma_bar_L": -1.0}), ("tp", {"feedback": "linear"})]


def _check(algorithm, extra, parametrization, optimizer):
    cfg = TrainerConfig(
        algorithm=algorithm,
        model="cnn",
        parametrization=parametrization,
        optimizer=optimizer,
        depth=3,
        base_width=16,
        lr=0.05 if optimizer == "sgd" else 0.01,
        dtype="float64",
        inference_steps=5,
        **extra,
    )
    return coord_check(cfg, widths=WIDTHS, steps=3, data=_images(128))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("algorithm, extra", CASES)
def test_cnn_mup_coord_check_is_flat(algorithm, extra, optimizer):
    cc = _check(algorithm, extra, "mup", optimizer)
    assert cc.max_abs_slope(steps=[1, 2, 3]) < 0.15, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, extra", CASES)
def test_cnn_sp_output_grows_with_width(algorithm, extra):
    """The negative control: the same check under SP shows the output blowing up with width."""
    cc = _check(algorithm, extra, "sp", "sgd")
    assert cc.slope("layers.2", 3) > 0.4, cc.slopes
