"""trainers._products: every backend's products, and every trainer on them, against float64."""

from __future__ import annotations

import pytest
import torch

from trainers import TrainerConfig, make_trainer, train
from trainers import _products as products
from trainers._data import Dataset

TOL = 1e-5  # relative (max-norm) error allowed against float64
BACKENDS = ["auto", "torch", "onednn"]


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv(products.ENV, request.param)
    products.reset()
    yield request.param
    products.reset()


def _operands(gen: torch.Generator):
    a = torch.randn(96, 300, generator=gen)
    w = torch.randn(200, 300, generator=gen)
    e = torch.randn(96, 200, generator=gen)
    b = torch.randn(200, generator=gen)
    return a, w, e, b


def test_each_product_matches_float64(backend):
    a, w, e, b = _operands(torch.Generator().manual_seed(0))
    A, W, E, Bv = (t.double() for t in (a, w, e, b))
    checks = [
        (products.linear(a, w), A @ W.T),
        (products.linear(a, w, b), A @ W.T + Bv),
        (products.matmul(e, w), E @ W),
        (products.outer(e, a), E.T @ A),
        (products.outer(e, a, -0.37), -0.37 * (E.T @ A)),
        (products.residual(e, a, w, 1.0), E - A @ W.T),
        (products.residual(e, a, w, 0.25), E - 0.25 * (A @ W.T)),
    ]
    for got, ref in checks:
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert rel(got, ref) < TOL
    expect = {"torch": "torch", "onednn": "onednn"}.get(backend)
    if expect:  # a forced backend is the one that ran
        assert products.used() == expect
    else:
        assert set(products.used().split("+")) <= {"torch", "onednn"} and products.used()


def test_float64_and_autograd_take_torchs_path(monkeypatch):
    monkeypatch.setenv(products.ENV, "onednn")
    products.reset()
    a, w, e, _ = _operands(torch.Generator().manual_seed(1))
    out = products.matmul(e.double(), w.double())
    assert out.dtype == torch.float64 and products.used() == "torch"
    products.reset_used()
    w = w.requires_grad_()
    products.linear(a, w).sum().backward()  # autograd through the product still works
    assert products.used() == "torch" and torch.allclose(w.grad, a.sum(0).expand_as(w))
    products.reset_used()
    with torch.no_grad():
        products.linear(a, w)
    assert products.used() == "onednn"


def test_auto_measures_once_per_shape(monkeypatch):
    monkeypatch.setenv(products.ENV, "auto")
    products.reset()
    timed = []
    real = products._time
    monkeypatch.setattr(products, "_time", lambda fn, args: timed.append(fn) or real(fn, args))
    a, w, e, _ = _operands(torch.Generator().manual_seed(2))
    products.linear(a, w)
    first = len(timed)
    assert first == 4  # two backends, alternated twice
    products.linear(a, w)
    products.linear(a + 1, w)
    assert len(timed) == first  # same shape: the cached choice
    products.linear(a[:50], w)
    assert len(timed) == 2 * first  # a new shape is measured


def test_a_lowered_matmul_precision_is_recorded(monkeypatch):
    monkeypatch.setenv(products.ENV, "onednn")
    products.reset()
    a, w, _, _ = _operands(torch.Generator().manual_seed(6))
    products.linear(a, w)
    assert products.used() == "onednn"
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert products.used() == "onednn (float32 matmul precision medium)"
    finally:
        torch.set_float32_matmul_precision(before)


def test_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(products.ENV, "mkl-fast")
    with pytest.raises(ValueError, match="MUTRANSFER_MATMUL='mkl-fast' is not one of auto, torch, onednn"):
        products.linear(torch.ones(2, 3), torch.ones(4, 3))


# ---- every layer kind, then every algorithm, against float64 -----------------------------------
def _layers():
    from trainers import Conv, Dense

    torch.manual_seed(5)
    dense, conv = Dense(147, 40, bias=True), Conv(3, 8, kernel=3, stride=2, padding=1, bias=True)
    for layer in (dense, conv):
        torch.nn.init.normal_(layer.weight)
        torch.nn.init.normal_(layer.bias)
    return {
        "dense": (dense, torch.randn(24, 3, 7, 7), torch.randn(24, 40)),  # Dense flattens its input
        "conv": (conv, torch.randn(24, 3, 7, 7), torch.randn(24, 8, 4, 4)),
    }


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_layer_adjoints_match_float64(backend, kind):
    """forward, residual, transpose, weight and bias gradients, and TP's DRL gradient through the
    layer's adjoint, each in float32 on this backend, equal the float64 layer's to 1e-5."""
    import copy

    from trainers._tp_feedback import drl_grad

    layer, a, e = _layers()[kind]
    l64 = copy.deepcopy(layer).double()
    A, E = a.double(), e.double()
    q = torch.randn_like(layer.weight)
    with torch.no_grad():
        checks = [
            (layer(a), l64(A)),
            (layer.residual(e, a, 0.7), l64.residual(E, A, 0.7)),
            (layer.transpose(e, layer.weight, a.shape), l64.transpose(E, l64.weight, A.shape)),
            (layer.weight_grad(e, a, -0.3), l64.weight_grad(E, A, -0.3)),
            (layer.bias_grad(e, 2.0), l64.bias_grad(E, 2.0)),
            *zip(drl_grad(layer, q, e, a), drl_grad(l64, q.double(), E, A)),
        ]
    for i, (got, ref) in enumerate(checks):
        assert got.dtype == torch.float32 and rel(got, ref) < TOL, i


CASES = [
    ("bp", "mlp", {}),
    ("bp", "cnn", {}),
    ("tp", "mlp", {}),
    ("tp", "mlp", {"feedback": "regression"}),
    ("tp", "cnn", {}),
    ("pc", "mlp", {"inference_steps": 5}),
    ("pc", "cnn", {"inference_steps": 5}),
    ("pc", "mlp", {"inference_steps": 3, "fixed_prediction": True}),
    ("pc", "mlp", {"sequential_inference": True}),
]


def _data(model: str, n: int = 32):
    g = torch.Generator().manual_seed(3)
    d = 49 if model == "cnn" else 40
    return torch.randn(n, d, generator=g), torch.randint(0, 5, (n,), generator=g)


def _config(algorithm: str, model: str, extra: dict) -> TrainerConfig:
    return TrainerConfig(
        algorithm=algorithm,
        model=model,
        width=96,
        base_width=32,
        depth=3,
        bias=True,
        lr=0.05,
        seed=4,
        device="cpu",
        **extra,
    )


def _direction(cfg: TrainerConfig, x, y) -> dict:
    return make_trainer(cfg, x.shape[1], 5).update_direction(x, y)


@pytest.mark.parametrize("algorithm,model,extra", CASES, ids=[f"{a}-{m}-{i}" for i, (a, m, _) in enumerate(CASES)])
def test_trainers_match_float64(backend, algorithm, model, extra, monkeypatch):
    """Every algorithm's update direction in float32 on this backend against the float64 run (BP:
    autograd's float64 gradient), and BP's weights after a step: within 1e-5 relative.

    PC's lower layers cannot meet 1e-5 in float32 on any backend: their errors e_l = x_l − μ_l are
    small differences of Θ(1) activities, so float32 rounding is amplified (2e-5 to 1.2e-4 for
    layers.0 here, on torch's own MKL path as on oneDNN). There each parameter's error is held to
    1.25× the error of torch's own float32 path instead (the product path must not add error)."""
    x, y = _data(model)
    cfg = _config(algorithm, model, extra)
    tr32, tr64 = make_trainer(cfg, x.shape[1], 5), make_trainer(cfg.replace(dtype="float64"), x.shape[1], 5)
    products.reset_used()
    d32 = tr32.update_direction(x, y)
    taken = products.used()
    assert taken == backend if backend != "auto" else set(taken.split("+")) <= {"torch", "onednn"}
    if algorithm == "bp":
        names, params = zip(*tr64.model.named_parameters())
        with torch.enable_grad():
            loss = tr64.loss_fn(tr64.model(x.double()), tr64.targets(y))
            d64 = {n: -g for n, g in zip(names, torch.autograd.grad(loss, params))}
    else:
        d64 = tr64.update_direction(x, y)
    bound = dict.fromkeys(d64, TOL)
    if algorithm == "pc":
        monkeypatch.setenv(products.ENV, "torch")
        d_torch = _direction(cfg, x, y)
        bound = {n: max(TOL, 1.25 * rel(d_torch[n], d64[n])) for n in d64}
    assert d32.keys() == d64.keys()
    for name in d32:
        assert rel(d32[name], d64[name]) < bound[name], name
    if algorithm == "bp":  # the step itself (TP's step draws noise, which differs between dtypes)
        tr32.step(x, y), tr64.step(x, y)
        for (name, p32), (_, p64) in zip(tr32.model.named_parameters(), tr64.model.named_parameters()):
            assert rel(p32.detach(), p64.detach()) < TOL, name


def test_train_records_the_backend(monkeypatch):
    x, y = _data("mlp", 64)
    data = Dataset("t", x, y, x[:16], y[:16], 5)
    cfg = TrainerConfig(algorithm="pc", width=64, base_width=32, inference_steps=2, device="cpu")
    for forced, dtype, expect in (
        ("onednn", "float32", "onednn"),
        ("torch", "float32", "torch"),
        ("onednn", "float64", "torch"),
    ):
        monkeypatch.setenv(products.ENV, forced)
        rows = train(make_trainer(cfg.replace(dtype=dtype), 40, 5), data, epochs=1, batch_size=32)
        assert rows[-1]["matmul_backend"] == expect
