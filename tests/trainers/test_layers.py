"""The layers' adjoints are the derivatives autograd computes (float64)."""

from __future__ import annotations

import pytest
import torch

from trainers._layers import Conv, Dense


def _layer_and_input(kind: str, bias: bool):
    g = torch.Generator().manual_seed(0)
    if kind == "dense":
        layer, a = Dense(2 * 3 * 3, 5, bias=bias), torch.randn(4, 2, 3, 3, generator=g)  # flattens its input
    else:
        layer, a = Conv(3, 6, kernel=3, stride=2, padding=1, bias=bias), torch.randn(4, 3, 9, 9, generator=g)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        if bias:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer, a.double(), g


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("bias", [False, True])
def test_adjoints_match_autograd(kind, bias):
    layer, a, g = _layer_and_input(kind, bias)
    a.requires_grad_(True)
    out = layer(a)
    e = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * e).sum(), [a, layer.weight] + ([layer.bias] if bias else []))
    with torch.no_grad():
        torch.testing.assert_close(layer.transpose(e, layer.weight, a.shape), grads[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.weight_grad(e, a), grads[1], rtol=1e-12, atol=1e-12)
        if bias:
            torch.testing.assert_close(layer.bias_grad(e), grads[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("bias", [False, True])
def test_residual_is_x_minus_alpha_forward(kind, bias):
    layer, a, g = _layer_and_input(kind, bias)
    with torch.no_grad():
        out = layer(a)
        x = torch.randn(out.shape, generator=g, dtype=torch.float64)
        got = layer.residual(x, a, 0.37)
        torch.testing.assert_close(got, x - 0.37 * out, rtol=1e-12, atol=1e-12)
        assert not torch.equal(got, x - out)  # α is applied


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_transpose_is_linear_in_its_weight(kind):
    """TP's feedback uses the adjoint with a weight Q of W's shape: <Q ⋆ᵀ u, r> = <Q, weight_grad(u, r)>."""
    layer, a, g = _layer_and_input(kind, False)
    with torch.no_grad():
        u = torch.randn(layer(a).shape, generator=g, dtype=torch.float64)
        q = torch.randn(layer.weight.shape, generator=g, dtype=torch.float64)
        r = torch.randn(a.shape, generator=g, dtype=torch.float64)
        lhs = (layer.transpose(u, q, a.shape) * r).sum()
        rhs = (q * layer.weight_grad(u, r)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * abs(float(lhs))


def test_conv_fan_in_and_output_side():
    conv = Conv(3, 8, kernel=3, stride=2, padding=1)
    assert conv.fan_in == 27
    assert [conv.output_side(s) for s in (28, 14, 8, 7)] == [14, 7, 4, 4]
