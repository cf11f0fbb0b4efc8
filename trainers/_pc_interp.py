"""PC between BP's gradient and Gauss-Newton, after μP training: sweep γ_L = c·m over c.

The paper (γ̄_L = −1, γ_L ∝ m) claims PC's update interpolates between the gradient (small γ_L)
and a Gauss-Newton-like direction (large γ_L). At initialisation the test cannot show it (the
coupling matrix is nearly isotropic there, so (I + C)⁻¹ is close to a scalar). Here the network
is first trained with BP under μP (SGD, full batch), then for each c the inference equilibrium
x*(c) of F = Σ_{l<L} γ_l/2B ‖x_l − μ_l‖² + γ_L ℓ(μ_L, y) is solved to a tolerance (a
preconditioned solver that stays stable at γ_L up to 10⁴·m, where explicit inference diverges),
and PC's update −∂F/∂θ at x* is compared with

- ``bp``: BP's negative gradient at the same weights;
- ``gn``: the activity-space Gauss-Newton direction (λ = 0) at the feedforward pass
  (:func:`activity_gauss_newton_direction`), c-independent;
- ``gn_relaxed``: the same formula with Jacobians and layer inputs taken at the relaxed activities
  x*(c), the residual still y − f(x);
- ``gn_param``: the batch minimum-norm parameter step Jᵀ(JJᵀ)⁻¹r;

in parameter space (cos of the flattened updates) and in function space: cos(J d, r), with J the
Jacobian of the batch outputs in the parameters and r = y − f(x) (1 for ``gn_param`` by
construction; the NTK-weighted residual for ``bp``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch.func import functional_call, jvp

from ._base import make_trainer
from ._config import TrainerConfig
from ._data import make_teacher_student
from ._pc_theory import (
    activity_gauss_newton_direction,
    direction_cosines,
    gauss_newton_direction,
)

DEFAULT_CS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


def _energy(model, x: torch.Tensor, xs: Sequence[torch.Tensor], y: torch.Tensor, gammas: Sequence[float]):
    """F at hidden activities ``xs`` (MSE output energy), as an autograd graph in ``xs`` and the weights."""
    B, L = x.shape[0], len(model.layers)
    inp, total = x, 0.0
    for l, layer in enumerate(model.layers):
        mu = model.multipliers[l] * layer(inp)
        target = xs[l] if l < L - 1 else y
        total = total + gammas[l] * (target - mu).pow(2).sum() / (2 * B)
        if l < L - 1:
            inp = model.phi(xs[l])
    return total


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return sum(float((u * v).sum()) for u, v in zip(a, b))


def relax(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    gammas: Sequence[float],
    tol: float = 1e-9,
    max_newton: int = 50,
    max_cg: int = 100,
) -> tuple[list[torch.Tensor], int, float]:
    """Inference equilibrium x* (hidden activities) from the feedforward pass, to relative gradient ``tol``.

    Truncated Newton: each step solves H d = ∇F (H by autograd Hessian-vector products) with
    preconditioned conjugate gradients, stopping at negative curvature, then backtracks on F. The
    preconditioner is block-diagonal: the last hidden layer's exact Gauss-Newton block
    (γ_{L−1} I + γ_L Jᵀ J)/B per sample (Woodbury, J = α_L W_L diag φ'(x_{L−1})), 1/γ_l elsewhere, so
    the stiff directions of a large γ_L cost nothing. Returns (x*, Newton steps, relative gradient norm).
    """
    L, B = len(model.layers), x.shape[0]
    with torch.no_grad():
        xs = [h.clone() for h in model.preactivations(x)[:-1]]
    WL = (model.layers[-1].weight * model.multipliers[-1]).detach()
    eye = torch.eye(WL.shape[0], dtype=WL.dtype, device=WL.device)
    a, gam = gammas[L - 2] / B, gammas[L - 1] / B

    def precondition(v: Sequence[torch.Tensor], dphi: torch.Tensor, JJ: torch.Tensor) -> list[torch.Tensor]:
        out = [B / gammas[l] * t for l, t in enumerate(v)]
        w = torch.linalg.solve(JJ, ((v[L - 2] * dphi) @ WL.t()).unsqueeze(2)).squeeze(2)
        out[L - 2] = (v[L - 2] - (w @ WL) * dphi) / a  # (a I + γ Jᵀ J)⁻¹ v, per sample
        return out

    g0, rel, it = None, float("inf"), 0
    for it in range(1, max_newton + 1):  # noqa: B007 (the count is returned after the loop)
        xs_ = [v.detach().requires_grad_(True) for v in xs]
        F = _energy(model, x, xs_, y, gammas)
        grads = torch.autograd.grad(F, xs_, create_graph=True)
        g = [t.detach() for t in grads]
        norm = _dot(g, g) ** 0.5
        g0 = g0 or max(norm, 1e-300)
        rel = norm / g0
        if rel < tol:
            break
        with torch.no_grad():
            dphi = model.dphi(xs[L - 2])
            JJ = torch.einsum("cn,bn,dn->bcd", WL, dphi * dphi, WL) + (a / gam) * eye
        d = [torch.zeros_like(t) for t in g]
        r = [t.clone() for t in g]
        z = precondition(r, dphi, JJ)
        p, rz = [t.clone() for t in z], _dot(r, z)
        forcing = min(0.5, rel**0.5) * norm
        for j in range(max_cg):
            Hp = [t.detach() for t in torch.autograd.grad(grads, xs_, grad_outputs=p, retain_graph=True)]
            pHp = _dot(p, Hp)
            if pHp <= 0:  # negative curvature: keep what CG has (or the preconditioned gradient)
                if j == 0:
                    d = z
                break
            step = rz / pHp
            d = [u + step * v for u, v in zip(d, p)]
            r = [u - step * v for u, v in zip(r, Hp)]
            if _dot(r, r) ** 0.5 < forcing:
                break
            z = precondition(r, dphi, JJ)
            rz, rz_old = _dot(r, z), rz
            p = [u + (rz / rz_old) * v for u, v in zip(z, p)]
        with torch.no_grad():
            f0, s, f1 = float(F), 1.0, float("inf")
            while s > 1e-8:
                trial = [u - s * v for u, v in zip(xs, d)]
                f1 = float(_energy(model, x, trial, y, gammas))
                if f1 <= f0 + 1e-13 * abs(f0):
                    xs = trial
                    break
                s /= 2
            if s <= 1e-8 or (rel < 1e-6 and not f0 - f1 > 1e-15 * abs(f0)):
                break  # no descent left at rounding level: as converged as float64 allows
    return [v.detach() for v in xs], it, rel


def pc_update_at(
    model, x: torch.Tensor, xs: Sequence[torch.Tensor], y: torch.Tensor, gammas: Sequence[float]
) -> dict[str, torch.Tensor]:
    """PC's update −∂F/∂θ at fixed activities ``xs`` (the rule of ``PCTrainer.weight_direction``)."""
    params = dict(model.named_parameters())
    F = _energy(model, x, [v.detach() for v in xs], y, gammas)
    grads = torch.autograd.grad(F, list(params.values()))
    return {n: -g.detach() for n, g in zip(params, grads)}


def _function_cos(model, x: torch.Tensor, r: torch.Tensor, d: dict[str, torch.Tensor]) -> float:
    """cos(J d, r): the linearised change of the batch outputs along d against the residual."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    _, jd = jvp(lambda p: functional_call(model, p, (x,)), (params,), ({n: d[n] for n in params},))
    return float((jd * r).sum() / (jd.norm() * r.norm()).clamp_min(1e-300))


def pc_interpolation(
    widths: Sequence[int] = (64, 256, 1024),
    cs: Sequence[float] = DEFAULT_CS,
    seeds: Sequence[int] = (0, 1, 2),
    batch_sizes: Sequence[int] = (32, 128),
    train_steps: int = 200,
    train_lr: float = 0.2,
    activation: str = "tanh",
    depth: int = 3,
    tol: float = 1e-9,
) -> pd.DataFrame:
    """One row per (batch size, width, seed, c): parameter- and function-space cosines (see module doc).

    The network (μP, SGD, base width 64, float64) is trained with BP for ``train_steps`` full-batch
    steps of ``train_lr`` on a teacher-student batch (d = 32, C = 10) before the measurement;
    hidden energy weights are 1 and γ_L = c · m.
    """
    rows = []
    for B in batch_sizes:
        data = make_teacher_student(n_train=B, n_test=1, seed=7)
        for width in widths:
            for seed in seeds:
                cfg = TrainerConfig(
                    algorithm="bp",
                    parametrization="mup",
                    dtype="float64",
                    depth=depth,
                    width=int(width),
                    activation=activation,
                    seed=int(seed),
                    lr=train_lr,
                )
                bp = make_trainer(cfg, data.input_dim, data.output_dim)
                x, y = data.x_train, bp.targets(data.y_train)
                loss0 = float(bp.evaluate(x, y)["loss"])
                for _ in range(train_steps):
                    bp.step(x, y)
                model, loss = bp.model, float(bp.evaluate(x, y)["loss"])
                with torch.no_grad():
                    r = y - model(x)
                grad = bp.update_direction(x, y)
                ones = [1.0] * (depth - 1)
                gn = activity_gauss_newton_direction(model, x, y, ones + [1.0])
                gnp = gauss_newton_direction(model, x, y, per_sample=False)
                base = {
                    "batch_size": B,
                    "width": int(width),
                    "seed": int(seed),
                    "train_steps": train_steps,
                    "loss_init": loss0,
                    "loss_trained": loss,
                    "fcos_bp": _function_cos(model, x, r, grad),
                    "fcos_gn": _function_cos(model, x, r, gn),
                    "fcos_gn_param": _function_cos(model, x, r, gnp),
                    "cos_bp_gn": direction_cosines(grad, gn)["all"],
                }
                for c in cs:
                    gammas = ones + [float(c) * cfg.width_mult]
                    xs, iters, rel = relax(model, x, y, gammas, tol=tol)
                    d = pc_update_at(model, x, xs, y, gammas)
                    gnr = activity_gauss_newton_direction(model, x, y, gammas, hidden=xs)
                    rows.append(
                        {
                            **base,
                            "c": float(c),
                            "gamma_L": gammas[-1],
                            "relax_iters": iters,
                            "relax_residual": rel,
                            "cos_bp": direction_cosines(d, grad)["all"],
                            "cos_gn": direction_cosines(d, gn)["all"],
                            "cos_gn_relaxed": direction_cosines(d, gnr)["all"],
                            "cos_gn_param": direction_cosines(d, gnp)["all"],
                            "fcos_pc": _function_cos(model, x, r, d),
                        }
                    )
    return pd.DataFrame(rows)
