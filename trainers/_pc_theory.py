"""Closed forms for analysing PC: the deep-linear fixed point, Gauss-Newton directions, cosines.

Deep linear network (φ = identity, effective weights W̃_l = α_l W_l, MSE output energy), at the
equilibrium of inference (∂F/∂x_l = 0 for every hidden l):

    e*_L = (I + C)^{-1} (y − f(x)),   C = Σ_{i=2}^{L} (γ_L/γ_{i−1}) W̃_{L:i} W̃_{L:i}ᵀ,
    e*_l = (γ_L/γ_l) W̃_{L:l+1}ᵀ e*_L,  W̃_{L:i} = W̃_L ⋯ W̃_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ._model import MLP


def _effective(model: MLP) -> tuple[list[torch.Tensor], list]:
    Ws = [layer.weight.detach() * a for layer, a in zip(model.layers, model.multipliers)]
    bs = [None if layer.bias is None else layer.bias.detach() * a for layer, a in zip(model.layers, model.multipliers)]
    return Ws, bs


@torch.no_grad()
def linear_pc_coupling(model: MLP, gammas: Sequence[float]) -> torch.Tensor:
    """C = Σ_{i=2}^{L} (γ_L/γ_{i−1}) W̃_{L:i} W̃_{L:i}ᵀ (C × C) of a deep linear network.

    Args:
        model: an :class:`MLP` (its activation is not checked here).
        gammas: (γ_1, ..., γ_L).

    Returns:
        The symmetric C × C matrix C; ‖C‖ → 0 means PC's converged update tends to BP's gradient.
    """
    Ws, _ = _effective(model)
    L = len(Ws)
    if len(gammas) != L:
        raise ValueError(f"gammas has {len(gammas)} entries; the model has {L} layers")
    prod = Ws[-1]  # W̃_{L:L}
    C = torch.zeros(prod.shape[0], prod.shape[0], dtype=prod.dtype, device=prod.device)
    for i in range(L, 1, -1):  # i = L .. 2 (1-based); prod = W̃_{L:i}
        C += (gammas[-1] / gammas[i - 2]) * (prod @ prod.t())
        prod = prod @ Ws[i - 2]
    return C


@torch.no_grad()
def linear_pc_fixed_point(model: MLP, x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float]) -> list[torch.Tensor]:
    """Equilibrium errors e*_1..e*_L (each B × n_l) of PC inference in a deep linear network.

    e*_L = (I + C)^{-1} (y − f(x)) and e*_l = (γ_L/γ_l) W̃_{L:l+1}ᵀ e*_L (rows are samples).

    Args:
        model: an :class:`MLP` with ``activation="linear"``.
        x: inputs, B × d.
        y: regression targets, B × C (the output is clamped to y; MSE energy).
        gammas: (γ_1, ..., γ_L).

    Returns:
        [e*_1, ..., e*_L].
    """
    if model.activation != "linear":
        raise ValueError(f"activation={model.activation!r}: the closed form needs 'linear'")
    Ws, _ = _effective(model)
    L = len(Ws)
    C = linear_pc_coupling(model, gammas)
    r = y.to(C.dtype) - model(x)
    eye = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
    e_L = torch.linalg.solve(eye + C, r.t()).t()  # (I + C) symmetric
    errs = [e_L]
    back = e_L  # rows: e*_L W̃_{L:l+1}
    for l in range(L - 1, 0, -1):  # l = L−1 .. 1 (1-based)
        back = back @ Ws[l]
        errs.insert(0, back * (gammas[-1] / gammas[l - 1]))
    return errs


@torch.no_grad()
def linear_pc_direction(
    model: MLP, x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float]
) -> dict[str, torch.Tensor]:
    """PC's update direction at the inference equilibrium of a deep linear network.

    direction_{W_l} = (γ_l α_l / B) e*_lᵀ x*_{l−1}, with x*_0 = x and x*_l = W̃_l x*_{l−1} + b̃_l + e*_l.

    Returns:
        {``layers.l.weight``/``layers.l.bias``: tensor}, comparable with a trainer's ``update_direction``.
    """
    errs = linear_pc_fixed_point(model, x, y, gammas)
    Ws, bs = _effective(model)
    B, out, act = x.shape[0], {}, x.to(Ws[0].dtype)
    for l, (layer, alpha, e) in enumerate(zip(model.layers, model.multipliers, errs)):
        scale = gammas[l] * alpha / B
        out[f"layers.{l}.weight"] = scale * e.t() @ act
        if layer.bias is not None:
            out[f"layers.{l}.bias"] = scale * e.sum(0)
        act = act @ Ws[l].t() + (0 if bs[l] is None else bs[l]) + e
    return out


@torch.no_grad()
def output_jacobians(
    model: MLP,
    x: torch.Tensor,
    hidden: Sequence[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Per-sample Jacobians of the output with respect to each pre-activation.

    D_l[a] = ∂f(x_a)/∂h_l (C × n_l), from D_L = I and D_l = (D_{l+1} α_{l+1} W_{l+1}) ⊙ φ'(h_l).
    ``hidden``: take h_1..h_{L−1} at these activities (e.g. PC's relaxed ones) instead of the
    feedforward pass; h_L is then the prediction from the last of them.

    Returns:
        (D_1..D_L each B × C × n_l, layer inputs φ(h_{l−1}) each B × n_{l−1}, h_L).
    """
    if hidden is None:
        hs = model.preactivations(x)
    else:
        hs = list(hidden) + [model.multipliers[-1] * model.layers[-1](model.phi(hidden[-1]))]
    inputs = [x.to(hs[0].dtype)] + [model.phi(h) for h in hs[:-1]]
    B, C = hs[-1].shape
    D = torch.eye(C, dtype=hs[-1].dtype, device=hs[-1].device).expand(B, C, C)
    Ds = [D]
    for l in range(len(hs) - 1, 0, -1):
        W = model.layers[l].weight.detach() * model.multipliers[l]
        D = (D @ W) * model.dphi(hs[l - 1]).unsqueeze(1)
        Ds.insert(0, D)
    return Ds, inputs, hs[-1]


@torch.no_grad()
def gauss_newton_direction(
    model: MLP, x: torch.Tensor, y: torch.Tensor, per_sample: bool = True, damping: float = 0.0
) -> dict[str, torch.Tensor]:
    """Minimum-norm Gauss-Newton direction of the squared error, in parameter space.

    With J the Jacobian of the outputs with respect to all parameters and r = y − f(x):

        per_sample=False:  d = Jᵀ (J Jᵀ + λ I)^{-1} r        (J Jᵀ: the BC × BC empirical NTK)
        per_sample=True:   d = Σ_a J_aᵀ (J_a J_aᵀ + λ I)^{-1} r_a   (one C × C block per sample)

    i.e. the smallest parameter step after which the linearised network fits the batch (or each
    sample alone); λ = ``damping``. Computed layer by layer from :func:`output_jacobians`.

    Returns:
        {``layers.l.weight``/``layers.l.bias``: tensor}; only its direction is meaningful.
    """
    Ds, inputs, f = output_jacobians(model, x)
    r = y.to(f.dtype) - f
    B, C = r.shape
    alphas, has_bias = model.multipliers, [layer.bias is not None for layer in model.layers]
    if per_sample:
        K = sum(
            a * a * (inp.pow(2).sum(1) + hb)[:, None, None] * (D @ D.transpose(1, 2))
            for a, inp, D, hb in zip(alphas, inputs, Ds, has_bias)
        )
        K = K + damping * torch.eye(C, dtype=K.dtype, device=K.device)
        u = torch.linalg.solve(K, r.unsqueeze(2)).squeeze(2)  # B × C
    else:
        K = torch.zeros(B * C, B * C, dtype=f.dtype, device=f.device)
        for a, inp, D, hb in zip(alphas, inputs, Ds, has_bias):
            Df = D.reshape(B * C, -1)
            gram = (inp @ inp.t() + float(hb)).repeat_interleave(C, 0).repeat_interleave(C, 1)
            K += a * a * gram * (Df @ Df.t())
        K += damping * torch.eye(B * C, dtype=K.dtype, device=K.device)
        u = torch.linalg.solve(K, r.reshape(B * C, 1)).reshape(B, C)
    out = {}
    for l, (a, inp, D) in enumerate(zip(alphas, inputs, Ds)):
        delta = torch.einsum("bc,bcn->bn", u, D)  # Σ_i u_{a,i} ∂f_i/∂h_l
        out[f"layers.{l}.weight"] = a * delta.t() @ inp
        if has_bias[l]:
            out[f"layers.{l}.bias"] = a * delta.sum(0)
    return out


@torch.no_grad()
def activity_gauss_newton_direction(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    gammas: Sequence[float],
    damping: float = 0.0,
    hidden: Sequence[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Gauss-Newton direction in activity space, weighted by the energy weights, per sample.

    With J_l = ∂f/∂h_l at the feedforward pass and r = y − f(x), for each sample:

        e_L = (λ I + Σ_{l<L} (γ_L/γ_l) J_l J_lᵀ)^{-1} r,   e_l = (γ_L/γ_l) J_lᵀ e_L,
        direction_{W_l} = (γ_l α_l / B) e_lᵀ φ(h_{l−1}).

    λ = 0 (``damping``) is the minimum-(Σ γ_l‖δh_l‖²) activity change that fits the linearised
    network; λ = 1 is PC's equilibrium linearised at the feedforward pass (exact in a deep linear
    network), so PC interpolates between the gradient (C → 0) and this direction (C ≫ I).
    ``hidden``: J_l and the layer inputs at these activities instead of the feedforward pass
    (the residual stays y − f(x)).
    """
    Ds, inputs, f = output_jacobians(model, x, hidden)
    if hidden is not None:
        f = model(x)
    r = y.to(f.dtype) - f
    B, C = r.shape
    K = damping * torch.eye(C, dtype=f.dtype, device=f.device).expand(B, C, C)
    for l, D in enumerate(Ds[:-1]):
        K = K + (gammas[-1] / gammas[l]) * (D @ D.transpose(1, 2))
    u = torch.linalg.solve(K, r.unsqueeze(2)).squeeze(2)
    out = {}
    for l, (layer, a, inp, D) in enumerate(zip(model.layers, model.multipliers, inputs, Ds)):
        e = gammas[-1] / gammas[l] * torch.einsum("bc,bcn->bn", u, D)
        out[f"layers.{l}.weight"] = gammas[l] * a / B * e.t() @ inp
        if layer.bias is not None:
            out[f"layers.{l}.bias"] = gammas[l] * a / B * e.sum(0)
    return out


def direction_cosines(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Cosine similarity per parameter, and over all parameters together (key ``all``).

    cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖) on the flattened tensors.
    """
    out, dot, na, nb = {}, 0.0, 0.0, 0.0
    for k in a:
        u, v = a[k].flatten().double(), b[k].flatten().double()
        d, nu, nv = float(u @ v), float(u @ u), float(v @ v)
        out[k] = d / max((nu * nv) ** 0.5, 1e-300)
        dot, na, nb = dot + d, na + nu, nb + nv
    out["all"] = dot / max((na * nb) ** 0.5, 1e-300)
    return out
