"""Geometry of PC's update: how close is it to BP's gradient, and to a Gauss-Newton direction?

For one batch and one initialisation, with d_PC the PC update after T inference steps
(``PCTrainer.update_direction``; T = ∞: the inference equilibrium), the cosines

    cos(d_PC, −∇L)      BP's negative gradient (same weights),
    cos(d_PC, d_GN)     activity-space Gauss-Newton (``activity_gauss_newton_direction``, λ = 0),
    cos(d_PC, d_GNp)    parameter-space minimum-norm Gauss-Newton (``gauss_newton_direction``, per sample),

per layer and over all layers (``all``), cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖) on the flattened tensors.
The paper's claim: under μP with γ̄_L = 0, ‖C‖ = O(1/m) and d_PC → −∇L as the width grows; with
γ̄_L = −1, C stays Θ(1) and d_PC stays between the gradient and the Gauss-Newton direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from ._base import make_trainer
from ._config import TrainerConfig
from ._data import make_teacher_student
from ._pc_theory import (
    activity_gauss_newton_direction,
    direction_cosines,
    gauss_newton_direction,
    linear_pc_coupling,
    linear_pc_direction,
)

NETWORKS = ("linear", "tanh")
CONVERGED = "inf"  # label of converged inference in the ``steps`` column


def check_steps(steps: Iterable) -> list[str]:
    """The inference-step labels of ``steps`` (positive integers or ``inf``); ValueError names a bad one."""
    out = []
    for s in steps:
        label = str(s).strip().lower()
        if label in ("inf", "converged", "conv"):
            out.append(CONVERGED)
        elif label.isdigit() and int(label) > 0:
            out.append(str(int(label)))
        else:
            raise ValueError(f"steps={s!r} is not a positive integer or 'inf' (converged inference)")
    return out


def _pc_update(pc, steps: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """PC's update after ``steps`` inference steps, from a copy of ``pc`` with the same weights."""
    other = make_trainer(pc.cfg.replace(inference_steps=int(steps)), pc.input_dim, pc.output_dim)
    other.model.load_state_dict(pc.model.state_dict())
    return other.update_direction(x, y)


def _cosines(cfg: TrainerConfig, data, labels: list, converged_steps: int) -> list[dict]:
    """One network's rows: per inference schedule and layer, PC's cosines with BP's and the GN directions."""
    net = cfg.activation
    pc = make_trainer(cfg, data.input_dim, data.output_dim)
    bp = make_trainer(cfg.replace(algorithm="bp"), data.input_dim, data.output_dim)
    bp.model.load_state_dict(pc.model.state_dict())
    x, y = data.x_train, pc.targets(data.y_train)
    refs = (
        bp.update_direction(x, y),
        activity_gauss_newton_direction(pc.model, x, y, pc.gammas),
        gauss_newton_direction(pc.model, x, y, per_sample=True),
    )
    cnorm = (
        float(torch.linalg.matrix_norm(linear_pc_coupling(pc.model, pc.gammas), 2)) if net == "linear" else float("nan")
    )
    rows = []
    for label in labels:
        gap = float("nan")
        if label == CONVERGED and net == "linear":
            d = linear_pc_direction(pc.model, x, y, pc.gammas)
        elif label == CONVERGED:
            d = _pc_update(pc, converged_steps, x, y)
            half = _pc_update(pc, max(1, converged_steps // 2), x, y)
            gap = (
                sum(float((d[k] - half[k]).pow(2).sum()) for k in d) / sum(float(d[k].pow(2).sum()) for k in d)
            ) ** 0.5
        else:
            d = _pc_update(pc, int(label), x, y)
        c_bp, c_gn, c_gnp = (direction_cosines(d, ref) for ref in refs)
        rows += [
            {
                "steps": label,
                "layer": layer,
                "cos_bp": c_bp[layer],
                "cos_gn": c_gn[layer],
                "cos_gn_param": c_gnp[layer],
                "coupling_norm": cnorm,
                "conv_gap": gap,
            }
            for layer in c_bp
        ]
    return rows


def pc_geometry(
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    gamma_bar_Ls: Sequence[float] = (0.0, -1.0),
    steps: Sequence = (1, 5, 20, 100, CONVERGED),
    networks: Sequence[str] = NETWORKS,
    seeds: Sequence[int] = (0,),
    batch_size: int = 64,
    depth: int = 3,
    inference_lr: float = 0.1,
    converged_steps: int = 1000,
    parametrization: str = "mup",
) -> pd.DataFrame:
    """Cosines of PC's update with BP's gradient and with two Gauss-Newton directions, per width.

    cos(d_PC(T), d) for d ∈ {−∇L, d_GN (activity space, λ = 0), d_GNp (parameter space)}; T = ∞ is
    the closed-form equilibrium in the deep linear network (``linear_pc_direction``) and
    ``converged_steps`` inference steps in the tanh MLP (its distance to the update after half as
    many steps is reported as ``conv_gap``). Teacher-student batch (d = 32, C = 10), float64, SGD
    μP table of each γ̄_L, forward-initialised activities, no fixed prediction.

    Args:
        widths: hidden widths (base width 64).
        gamma_bar_Ls: output energy weight exponents, γ_L = m^(−γ̄_L).
        steps: inference step counts T, and/or ``"inf"`` for converged inference.
        networks: ``linear`` (deep linear network) and/or ``tanh`` (the MLP).
        seeds: initialisation seeds (one row set each).
        batch_size: batch size of the teacher-student batch.
        depth: number of weight layers L.
        inference_lr: step size β of gradient-descent inference.
        converged_steps: T used for ``"inf"`` in the tanh MLP.
        parametrization: ``mup`` or ``sp``.

    Returns:
        One row per (network, gamma_bar_L, steps, width, seed, layer): ``cos_bp, cos_gn, cos_gn_param``,
        ``coupling_norm`` (‖C‖₂, linear network only, else NaN) and ``conv_gap`` (tanh, T = ∞).
    """
    bad = [n for n in networks if n not in NETWORKS]
    if bad:
        raise ValueError(f"network={bad[0]!r} is not one of {', '.join(NETWORKS)}")
    labels = check_steps(steps)
    data = make_teacher_student(n_train=batch_size, n_test=1, seed=7)
    rows = []
    for net in networks:
        for gbar in gamma_bar_Ls:
            for width in widths:
                for seed in seeds:
                    cfg = TrainerConfig(
                        algorithm="pc",
                        parametrization=parametrization,
                        dtype="float64",
                        depth=depth,
                        width=int(width),
                        activation=net,
                        seed=int(seed),
                        gamma_bar_L=float(gbar),
                        inference_lr=inference_lr,
                    )
                    key = {"network": net, "gamma_bar_L": float(gbar), "width": int(width), "seed": int(seed)}
                    rows += [{**key, **r} for r in _cosines(cfg, data, labels, converged_steps)]
    return pd.DataFrame(
        rows,
        columns=[
            "network",
            "gamma_bar_L",
            "steps",
            "width",
            "seed",
            "layer",
            "cos_bp",
            "cos_gn",
            "cos_gn_param",
            "coupling_norm",
            "conv_gap",
        ],
    )
