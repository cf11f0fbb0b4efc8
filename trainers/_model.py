"""The networks (MLP, CNN): layers ``layers.0 .. layers.{L-1}``, per-layer init and multipliers from a table."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ._layers import Conv, Dense
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


class Net(nn.Module):
    """A chain of weight layers ``layers.0 .. layers.{L−1}`` (``_layers.Dense`` / ``Conv``):

        h_1 = α_1 W_1 ⋆ x,   h_l = α_l W_l ⋆ φ(h_{l−1}),   f(x) = h_L,

    with α_l = ``multipliers[l]`` set by the parametrization (:func:`init_net`).
    Subclasses build ``layers`` and say how a flat input row becomes the first layer's input.
    """

    def __init__(self, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.phi, self.dphi = ACTIVATIONS[activation]

    def _finish(self, layers: list[nn.Module]) -> None:
        self.layers = nn.ModuleList(layers)
        self.roles = layer_roles(len(layers))
        self.multipliers = [1.0] * len(layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def shape_input(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's input for a batch of flat rows x (a view)."""
        return x

    def forward_pairs(self, x: torch.Tensor, pair: Callable[[torch.Tensor], tuple]) -> tuple[list, list]:
        """The feedforward pass keeping more than h: ([h_1..h_L], [pair(h_l) for l < L]).

        ``pair(h)`` returns a tuple whose first entry is φ(h), the next layer's input (PC asks
        for (φ(h), φ'(h)) in one pass); each φ is computed once.
        """
        hs, pairs = [], []
        inp = self.shape_input(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(inp)
            if self.multipliers[i] != 1.0:
                h = h * self.multipliers[i]
            hs.append(h)
            if i < last:
                pairs.append(pair(h))
                inp = pairs[-1][0]
        return hs, pairs

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[h_1, ..., h_L] for a batch x."""
        return self.forward_pairs(x, lambda h: (self.phi(h),))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.preactivations(x)[-1]


class MLP(Net):
    """The fully connected network d → n → … → n → C (``Dense`` layers).

    Args:
        input_dim: d.
        output_dim: C.
        width: hidden width n.
        depth: number of weight layers L ≥ 2.
        activation: ``tanh``, ``relu`` or ``linear``.
        bias: add biases (zero-initialised).
    """

    def __init__(
        self, input_dim: int, output_dim: int, width: int, depth: int, activation: str = "tanh", bias: bool = False
    ) -> None:
        super().__init__(activation)
        dims = [input_dim] + [width] * (depth - 1) + [output_dim]
        self.dims = dims
        self._finish([Dense(dims[i], dims[i + 1], bias=bias) for i in range(depth)])


class CNN(Net):
    """A convolutional network on square one-channel images; the width n is the channel count.

    Layers 1..L−1 are 3×3 convolutions with zero padding 1 and n output channels (stride 2 for
    the first two, 1 after), layer L a ``Dense`` readout of the flattened last feature map
    (fan-in n·s², s its side). A flat row of d = side² pixels is read as a side × side image.

    Args:
        input_dim: d, a perfect square.
        output_dim: C.
        width: channels n.
        depth: number of weight layers L ≥ 2 (L − 1 convolutions).
        activation: ``tanh``, ``relu`` or ``linear``.
        bias: add biases (zero-initialised).
    """

    def __init__(
        self, input_dim: int, output_dim: int, width: int, depth: int, activation: str = "tanh", bias: bool = False
    ) -> None:
        super().__init__(activation)
        side = math.isqrt(input_dim)
        if side * side != input_dim:
            raise ValueError(f"model='cnn' needs square images: input_dim={input_dim} is not a square")
        self.side = side
        layers, channels = [], 1
        for i in range(depth - 1):
            conv = Conv(channels, width, kernel=3, stride=2 if i < 2 else 1, padding=1, bias=bias)
            side, channels = conv.output_side(side), width
            layers.append(conv)
        layers.append(Dense(channels * side * side, output_dim, bias=bias))
        self._finish(layers)

    def shape_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 1, self.side, self.side)


MODELS: dict[str, type[Net]] = {"mlp": MLP, "cnn": CNN}


def make_model(
    model: str, input_dim: int, output_dim: int, width: int, depth: int, activation: str = "tanh", bias: bool = False
) -> Net:
    """Build the network ``model`` (``mlp`` or ``cnn``); the error lists the valid ones."""
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not one of {', '.join(MODELS)}")
    return MODELS[model](input_dim, output_dim, width, depth, activation, bias)


def init_net(model: Net, table: Table, width_mult: float, seed: int) -> None:
    """Initialise ``model`` in place: W_l ~ N(0, m^init_var / fan_in), biases 0, α_l = m^multiplier.

    fan_in is the layer's inputs per output unit (in, or in_channels · k² for a convolution).

    The draws are made in float64 on the CPU from ``seed`` and then cast, so the
    same seed gives the same numbers on every device and in every table at m = 1.
    """
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for i, (layer, role) in enumerate(zip(model.layers, model.roles)):
            rule = table.rule(role)
            fan_in = layer.fan_in
            std = math.sqrt(width_mult**rule.init_var / fan_in)
            w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64) * std
            layer.weight.copy_(w.to(layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.zero_()
            model.multipliers[i] = float(width_mult**rule.multiplier)


init_mlp = init_net  # the name it had when the MLP was the only network
