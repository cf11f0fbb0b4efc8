"""DTP feedback layers: difference-corrected target propagation, the difference
reconstruction loss (DRL) that trains them, and its closed-form ridge solution.

Feedback ``g{k}`` inverts forward layer ``layers.{k}`` (k = 1 .. L−1): it maps h_k back to
h_{k−1} as g_k(h) = Q_k ψ(h), with ψ the identity (``linear``) or tanh (``tanh``). Q_k has
W_k's shape and acts through the layer's adjoint (``_layers``): g_k(h) = ψ(h) Q_k for a dense
layer, the transposed convolution of ψ(h) with Q_k for a convolution.
Targets travel down with the difference correction (Lee et al., 2015)

    ĥ_{k−1} = g_k(ĥ_k) + h_{k−1} − g_k(h_k),   i.e.   δ_{k−1} = g_k(h_k + δ_k) − g_k(h_k),

and each g_k is trained on the difference reconstruction loss of Meulemans et al. (2020),
with noise ε ~ N(0, σ²) on the layer's input h_{k−1} (per unit noise variance):

    DRL_k = 1/(2Sσ²) Σ_s ||g_k(f_k(h_{k−1} + ε_s)) − g_k(f_k(h_{k−1})) − ε_s||²,

so that the difference-corrected feedback inverts f_k locally, around the current activities.

Analysis options set linear feedback in closed form (:func:`ridge_solution`): ``regression``
to the ridge solution of the classic reconstruction loss ½ mean ||Q f_k(h + ε) − (h + ε)||² on
the noise-perturbed batch activities (this is the one μP's table is checked with: its targets
stay in the span of the batch activities and are Θ(1) per unit), and ``regression_drl`` to the
DRL's own ridge solution. The latter fails μP's coordinate check: from S < n noise draws it
inverts f_k only on an S-dimensional subspace, so hidden targets shrink like n^{-1/2}
(measured slopes −0.65 for ``layers.0`` and −0.38 for ``layers.1`` over widths 64–2048).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _products as products

FEEDBACK_KINDS = ("linear", "tanh", "regression", "regression_drl")
REGRESSION_KINDS = ("regression", "regression_drl")

_PSI = {
    "linear": lambda h: h,
    "tanh": torch.tanh,
    "regression": lambda h: h,  # linear, at the ridge solution of the reconstruction loss
    "regression_drl": lambda h: h,  # linear, at the ridge solution of the DRL
}


def feedback_psi(kind: str):
    """ψ of a feedback kind: tanh for ``tanh``, else the identity."""
    if kind not in _PSI:
        raise ValueError(f"feedback={kind!r} is not one of {', '.join(FEEDBACK_KINDS)}")
    return _PSI[kind]


class Feedback(nn.Module):
    """One feedback map's weight Q, shaped like the forward weight it inverts."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))

    @property
    def fan_in(self) -> int:
        """Inputs per output unit of u ↦ u Q (dense) or of the transposed convolution (≈ out · k²)."""
        return self.weight.shape[0] * math.prod(self.weight.shape[2:])


def make_feedback(layers: nn.ModuleList) -> nn.ModuleDict:
    """Feedback maps ``g1 .. g{L−1}``: ``g{k}.weight`` is shaped like ``layers[k].weight``.

    Args:
        layers: the forward network's layers (``Net.layers``).

    Returns:
        ``nn.ModuleDict`` whose parameters are named ``g{k}.weight`` (never ``layers.*``).
    """
    return nn.ModuleDict({f"g{k}": Feedback(layers[k].weight.shape) for k in range(1, len(layers))})


def apply_feedback(layer: nn.Module, q: torch.Tensor, u: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Q acting on u through ``layer``'s adjoint, shaped like the layer's input (``shape``)."""
    return layer.transpose(u, q, shape)


def feedback_role(k: int, depth: int) -> str:
    """``feedback_output`` for the map that inverts the output layer, else ``feedback_hidden``."""
    return "feedback_output" if k == depth - 1 else "feedback_hidden"


@torch.no_grad()
def propagate_targets(
    feedback: nn.ModuleDict, layers: nn.ModuleList, psi, hs: list[torch.Tensor], delta_out: torch.Tensor
) -> list[torch.Tensor]:
    """Difference-corrected target differences δ_k = ĥ_k − h_k for every layer.

    δ_{k−1} = Q_k (ψ(h_k + δ_k) − ψ(h_k)).

    Args:
        feedback: the maps from :func:`make_feedback`.
        layers: the forward layers (their adjoints carry Q_k).
        psi: the feedback nonlinearity ψ.
        hs: forward preactivations [h_0 .. h_{L−1}] (``MLP.preactivations``, 0-based).
        delta_out: the output target difference ĥ_{L−1} − h_{L−1}.

    Returns:
        [δ_0 .. δ_{L−1}], one tensor shaped like each h.
    """
    deltas = [delta_out]
    for k in range(len(hs) - 1, 0, -1):
        u = psi(hs[k] + deltas[0]) - psi(hs[k])
        deltas.insert(0, apply_feedback(layers[k], feedback[f"g{k}"].weight, u, hs[k - 1].shape))
    return deltas


def _randn(like: torch.Tensor, gen: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``; with a list of generators (stacked members,
    ``trainers._stacked``), entry i of the leading axis is drawn from generator i, as that member
    alone would draw it."""
    if isinstance(gen, list):
        return torch.stack(
            [torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in gen]
        )
    return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


def _image(layer: nn.Module, multiplier: float, phi, psi, h: torch.Tensor) -> torch.Tensor:
    """ψ(f(h)) for the forward layer f(h) = α W φ(h) (+ α b): a perturbed activity's image."""
    out = layer(phi(h))
    return psi(out * multiplier if multiplier != 1.0 else out)


@torch.no_grad()
def drl_samples(
    layer: nn.Module,
    multiplier: float,
    phi,
    psi,
    h_in: torch.Tensor,
    h_out: torch.Tensor,
    noise: float,
    gen: torch.Generator | list[torch.Generator] | None = None,
):
    """One noise draw of the DRL's regression pairs for forward layer f(h) = α W φ(h) (+ α b).

    Both are divided by σ, so the DRL is per unit noise variance and its gradient (hence the
    feedback learning rate) does not depend on σ:

        DRL = 1/(2Sσ²) Σ_s ||g(f(h + ε_s)) − g(f(h)) − ε_s||²  =  ½ mean ||Q u − e||².

    Returns:
        (u, e): e = ε/σ with ε ~ N(0, σ²) shaped like h_in, and u = (ψ(f(h_in + ε)) − ψ(h_out))/σ.
    """
    eps = _randn(h_in, gen) * noise
    return (_image(layer, multiplier, phi, psi, h_in + eps) - psi(h_out)) / noise, eps / noise


@torch.no_grad()
def reconstruction_samples(
    layer: nn.Module,
    multiplier: float,
    phi,
    psi,
    h_in: torch.Tensor,
    h_out: torch.Tensor,
    noise: float,
    gen: torch.Generator | list[torch.Generator] | None = None,
):
    """One noise draw of the classic DTP reconstruction loss's pairs (Lee et al., 2015).

    Returns:
        (u, e): e = h_in + ε and u = ψ(f(h_in + ε)); the loss is ½ mean ||Q u − e||²,
        a regression of the noise-perturbed activities on their images.
    """
    e = h_in + _randn(h_in, gen) * noise
    return _image(layer, multiplier, phi, psi, e), e


def drl_grad(layer: nn.Module, q: torch.Tensor, u: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(DRL, ∂DRL/∂Q) for DRL = 1/(2S) Σ_s ||Q u_s − e_s||², Q acting through ``layer``'s adjoint.

    With r = Q u − e the gradient is the layer's weight gradient with u as the output error and
    r as the input: uᵀ r / S for a dense layer (W-shaped, like Q).
    """
    r = apply_feedback(layer, q, u, e.shape) - e
    s = u.shape[0]
    return 0.5 * r.pow(2).sum() / s, layer.weight_grad(u, r).div_(s)


def ridge_solution(u: torch.Tensor, e: torch.Tensor, ridge: float) -> torch.Tensor:
    """Dense linear feedback at its regularised regression solution, in closed form.

    Q* = argmin_Q 1/(2S) Σ_s ||Q u_s − e_s||² + λ/2 ||Q||_F²  =  (uᵀu + Sλ I)^{-1} uᵀe
       = uᵀ (u uᵀ + Sλ I)^{-1} e   (the S×S form, used when S < dim u).

    Args:
        u: S × n_out feedback inputs (``drl_samples``), e: S × n_in noise (each flattened per
            sample), ridge: λ ≥ 0 (λ = 0 gives the minimum-norm least-squares solution).

    Returns:
        Q*, n_out × n_in: shaped like the dense forward weight it inverts (``g(u) = u Q``).
    """
    u, e = u.flatten(1), e.flatten(1)
    s, n_out = u.shape
    if ridge <= 0:
        return torch.linalg.pinv(u) @ e
    if s < n_out:
        gram = products.linear(u, u)  # u uᵀ
        gram.diagonal().add_(s * ridge)
        return products.outer(u, torch.linalg.solve(gram, e))  # uᵀ (…)
    gram = products.outer(u, u)  # uᵀ u
    gram.diagonal().add_(s * ridge)
    return torch.linalg.solve(gram, products.outer(u, e))


def init_feedback(
    feedback: nn.ModuleDict, depth: int, init_exponents: dict[str, float], width_mult: float, seed: int
) -> None:
    """Q_k ~ N(0, m^e / fan_in) with e the table's init exponent of the map's role.

    Drawn in float64 on the CPU from its own seed stream, so the forward layers'
    draws are the same as in the BP and PC trainers of the same seed.
    """
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 104729)
    with torch.no_grad():
        for k in range(1, depth):
            fb = feedback[f"g{k}"]
            w = fb.weight
            std = math.sqrt(width_mult ** init_exponents[feedback_role(k, depth)] / fb.fan_in)
            w.copy_((torch.randn(w.shape, generator=gen, dtype=torch.float64) * std).to(w))
