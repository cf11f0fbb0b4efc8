"""The MLP: layers ``layers.0 .. layers.{L-1}``, per-layer init and multipliers from a table."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._param import Table, layer_roles

Activation = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _tanh_deriv(h: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(h)
    return 1.0 - t * t


ACTIVATIONS: dict[str, Activation] = {
    # name: (φ, φ')
    "tanh": (torch.tanh, _tanh_deriv),
    "relu": (torch.relu, lambda h: (h > 0).to(h.dtype)),
    "linear": (lambda h: h, torch.ones_like),
}


class MLP(nn.Module):
    """h_1 = α_1 W_1 x,  h_l = α_l W_l φ(h_{l−1}),  f(x) = h_L.

    Args:
        input_dim: d.
        output_dim: C.
        width: hidden width n.
        depth: number of weight layers L ≥ 2.
        activation: ``tanh``, ``relu`` or ``linear``.
        bias: add biases (zero-initialised).
    """

    def __init__(self, input_dim: int, output_dim: int, width: int, depth: int,
                 activation: str = "tanh", bias: bool = False) -> None:
        super().__init__()
        dims = [input_dim] + [width] * (depth - 1) + [output_dim]
        self.dims = dims
        self.roles = layer_roles(depth)
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1], bias=bias) for i in range(depth))
        self.activation = activation
        self.phi, self.dphi = ACTIVATIONS[activation]
        self.multipliers = [1.0] * depth

    @property
    def depth(self) -> int:
        return len(self.layers)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[h_1, ..., h_L] for a batch x."""
        hs = []
        inp = x
        for i, layer in enumerate(self.layers):
            h = layer(inp)
            if self.multipliers[i] != 1.0:
                h = h * self.multipliers[i]
            hs.append(h)
            inp = self.phi(h)
        return hs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.preactivations(x)[-1]


def init_mlp(model: MLP, table: Table, width_mult: float, seed: int) -> None:
    """Initialise ``model`` in place: W_l ~ N(0, m^init_var / fan_in), biases 0, α_l = m^multiplier.

    The draws are made in float64 on the CPU from ``seed`` and then cast, so the
    same seed gives the same numbers on every device and in every table at m = 1.
    """
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for i, (layer, role) in enumerate(zip(model.layers, model.roles)):
            rule = table.rule(role)
            fan_in = layer.weight.shape[1]
            std = math.sqrt(width_mult ** rule.init_var / fan_in)
            w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64) * std
            layer.weight.copy_(w.to(layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.zero_()
            model.multipliers[i] = float(width_mult ** rule.multiplier)
