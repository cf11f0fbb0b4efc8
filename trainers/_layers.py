"""Weight layers with their adjoints: what PC and TP need besides the forward map.

A layer computes ``forward(a) = W ⋆ a (+ b)`` (no width multiplier: the network applies α_l).
The local learning rules need two more linear maps of the same W, written out here so that
PC's inference and TP's feedback work on any layer without an autograd graph:

    transpose(e, W, shape)   = (∂(W ⋆ a)/∂a)ᵀ e        (the adjoint in the input: e W for Dense)
    weight_grad(e, a, s)     = s · ∂⟨e, W ⋆ a⟩/∂W       (s · eᵀ a for Dense)
    residual(x, a, α)        = x − α · forward(a)       (PC's error; one addmm for Dense)
    bias_grad(e, s)          = s · ∂⟨e, W ⋆ a + b⟩/∂b   (e summed over the batch and positions)

``Dense`` flattens its input, so it is both an MLP layer and a CNN's readout; its four products go
through ``_products`` (the fastest exact fp32 backend of this CPU; float64 unchanged).
``Conv`` is a square 2-d convolution (stride, zero padding); its adjoints are torch's
``conv2d_input`` / ``conv2d_weight``. ``fan_in`` is the number of inputs of one output unit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from . import _products as products


class Dense(nn.Module):
    """``forward(a) = vec(a) Wᵀ + b``; W is ``out × in`` (``in`` = the input's size per sample)."""

    def __init__(self, fan_in: int, out: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out, fan_in))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None

    @property
    def fan_in(self) -> int:
        return self.weight.shape[1]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return products.linear(a.flatten(1), self.weight, self.bias)

    def transpose(self, e: torch.Tensor, weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """(e W) reshaped to the input's ``shape``; ``weight`` is W or any tensor shaped like it."""
        return products.matmul(e, weight).view(shape)

    def residual(self, x: torch.Tensor, a: torch.Tensor, alpha: float) -> torch.Tensor:
        """x − α·forward(a) (torch: the subtraction rides in the GEMM, one ``addmm``)."""
        r = products.residual(x, a.flatten(1), self.weight, alpha)
        return r.sub_(self.bias, alpha=alpha) if self.bias is not None else r

    def weight_grad(self, e: torch.Tensor, a: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """scale · eᵀ vec(a): the gradient of ⟨e, forward(a)⟩ in W (the scale rides in the product)."""
        return products.outer(e, a.flatten(1), scale)

    @staticmethod
    def bias_grad(e: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        g = e.sum(0)
        return g.mul_(scale) if scale != 1.0 else g


class Conv(nn.Module):
    """``forward(a) = conv2d(a, W, stride, padding) + b``; W is ``out × in × k × k``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.stride, self.padding = int(stride), int(padding)

    @property
    def fan_in(self) -> int:
        return math.prod(self.weight.shape[1:])

    def output_side(self, side: int) -> int:
        """Spatial size of the output for a ``side × side`` input."""
        return (side + 2 * self.padding - self.weight.shape[-1]) // self.stride + 1

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return F.conv2d(a, self.weight, self.bias, self.stride, self.padding)

    def transpose(self, e: torch.Tensor, weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The transposed convolution of e with ``weight`` (shaped like W), to the input's ``shape``."""
        return conv2d_input(shape, weight, e, self.stride, self.padding)

    def residual(self, x: torch.Tensor, a: torch.Tensor, alpha: float) -> torch.Tensor:
        """x − α·forward(a)."""
        return torch.sub(x, self.forward(a), alpha=alpha)

    def weight_grad(self, e: torch.Tensor, a: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """scale × the gradient of ⟨e, conv2d(a, W)⟩ in W."""
        g = conv2d_weight(a, self.weight.shape, e, self.stride, self.padding)
        return g.mul_(scale) if scale != 1.0 else g

    @staticmethod
    def bias_grad(e: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        g = e.sum((0, 2, 3))
        return g.mul_(scale) if scale != 1.0 else g
