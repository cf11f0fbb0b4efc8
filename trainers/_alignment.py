"""Alignment exponent ω_l: does a layer's weight see its input's change by LLN or by CLT?

After training a few steps on a fixed batch, with W = α_l W_l(0) the layer's initial effective
weight and Δφ = φ(h_{l−1}(t)) − φ(h_{l−1}(0)) the change of its input features,

    r(n) = RMS(W Δφ) / (RMS entry of W · RMS entry of Δφ),

and ω_l is the slope of log r against log width. Δφ fully correlated with W's rows gives
r ∝ n (ω = 1, law of large numbers; BP under μP); Δφ independent of W gives r ∝ n^{1/2}
(ω = 1/2, central limit theorem; TP, whose feedback is independent of W_L).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ._base import make_trainer
from ._config import TrainerConfig
from ._coord import DEFAULT_WIDTHS
from ._data import Dataset, make_teacher_student
from ._fit import loglog_slope
from ._param import LayerRule, Table


@dataclass
class Alignment:
    """``table``: width, seed, rms_product, rms_weight, rms_dphi, ratio (one row each).

    ``omega``: slope of log2 ratio against log2 width; ``product_slope``: slope of log2
    RMS(W Δφ) (how the feature part of the layer's change scales with width).
    """

    table: pd.DataFrame
    omega: float
    product_slope: float


def alignment_exponent(
    base: TrainerConfig,
    widths=DEFAULT_WIDTHS,
    layer: int | None = None,
    steps: int = 1,
    seeds=(0,),
    data: Dataset | None = None,
    batch_size: int = 128,
    equalize_error: bool = True,
) -> Alignment:
    """Measure ω_l for ``base`` (any trainer: BP, PC, TP) across ``widths``.

    ω_l = d log r / d log n,  r = RMS(α_l W_l(0) Δφ(h_{l−1})) / (RMS(α_l W_l(0)) · RMS(Δφ(h_{l−1}))).

    Args:
        base: trainer config; its width is replaced by each of ``widths``.
        widths: hidden widths.
        layer: index l ≥ 1 of the weight layer (default: the last, ω_L).
        steps: training steps on the fixed batch before Δφ is taken.
        seeds: initialisation seeds; per width the rows are averaged before fitting.
        data: dataset whose first ``batch_size`` training rows form the batch
            (default: the coordinate check's teacher-student set, d = 32, C = 10).
        batch_size: size of the fixed batch.
        equalize_error: train on y + f_0(x), so the initial error is the same at every width.

    Returns:
        :class:`Alignment` with the per-width table, ω_l and the slope of RMS(W Δφ).
    """
    if data is None:
        data = make_teacher_student(n_train=batch_size, n_test=1, seed=1234)
    layer = base.depth - 1 if layer is None else int(layer)
    if not 1 <= layer < base.depth:
        raise ValueError(f"layer={layer!r} must be in 1..{base.depth - 1} (it needs a hidden input)")
    rows = []
    for width in widths:
        for seed in seeds:
            trainer = make_trainer(base.replace(width=int(width), seed=int(seed)), data.input_dim, data.output_dim)
            model = trainer.model
            x = data.x_train[:batch_size].to(trainer.device, trainer.dtype)
            y = trainer.targets(data.y_train[:batch_size])
            with torch.no_grad():
                h0 = model.preactivations(x)
                w0 = model.layers[layer].weight.detach().clone() * model.multipliers[layer]
            if equalize_error:
                if base.loss == "ce":
                    raise ValueError("equalize_error needs loss='mse'")
                y = y + h0[-1]
            for _ in range(steps):
                trainer.step(x, y)
            with torch.no_grad():
                dphi = model.phi(model.preactivations(x)[layer - 1]) - model.phi(h0[layer - 1])
                prod = float((dphi @ w0.T).pow(2).mean().sqrt())
                rw, rd = float(w0.pow(2).mean().sqrt()), float(dphi.pow(2).mean().sqrt())
            rows.append(
                {
                    "width": int(width),
                    "seed": int(seed),
                    "rms_product": prod,
                    "rms_weight": rw,
                    "rms_dphi": rd,
                    "ratio": prod / (rw * rd),
                }
            )
    table = pd.DataFrame(rows)
    g = table.groupby("width", sort=True)[["ratio", "rms_product"]].mean()
    return Alignment(table, loglog_slope(g.index, g.ratio), loglog_slope(g.index, g.rms_product))


# A kernel-regime control (NTK parametrization, SGD, relative to the base width): SP's init, every
# fan-in-n layer's lr ∝ 1/n. Features move like n^-1/2 and the output's feature term W_L Δφ vanishes,
# which μP must not do; ω_L alone cannot tell them apart (BP's Δφ stays correlated with W_L).
NTK_TABLE = Table(
    "bp/ntk/sgd", LayerRule(lr=0.0, bias_lr=0.0), LayerRule(lr=-1.0, bias_lr=0.0), LayerRule(lr=-1.0, bias_lr=0.0)
)


def alignment_profile(
    base: TrainerConfig,
    widths=DEFAULT_WIDTHS,
    steps: int = 3,
    seeds=(0, 1, 2),
    batch_size: int = 128,
    table: Table | None = None,
) -> pd.DataFrame:
    """Alignment ratio of every layer l ≥ 1 after each of ``steps`` steps, per width and seed.

    Rows: ``width, seed, step, layer, ratio, rms_product, rms_weight, rms_dphi`` (see module doc;
    initial error equalised as in :func:`alignment_exponent`). ``table``: a parametrization table
    given directly (e.g. :data:`NTK_TABLE`, BP only) instead of the registered one.
    """
    data = make_teacher_student(n_train=batch_size, n_test=1, seed=1234)
    kw = {} if table is None else {"table": table}
    rows = []
    for width in widths:
        for seed in seeds:
            trainer = make_trainer(
                base.replace(width=int(width), seed=int(seed)), data.input_dim, data.output_dim, **kw
            )
            model = trainer.model
            x = data.x_train[:batch_size].to(trainer.device, trainer.dtype)
            y = trainer.targets(data.y_train[:batch_size])
            with torch.no_grad():
                h0 = model.preactivations(x)
                w0 = [layer.weight.detach().clone() * a for layer, a in zip(model.layers, model.multipliers)]
            y = y + h0[-1]
            for t in range(1, steps + 1):
                trainer.step(x, y)
                with torch.no_grad():
                    ht = model.preactivations(x)
                    for l in range(1, base.depth):
                        dphi = model.phi(ht[l - 1]) - model.phi(h0[l - 1])
                        prod = float((dphi @ w0[l].T).pow(2).mean().sqrt())
                        rw, rd = float(w0[l].pow(2).mean().sqrt()), float(dphi.pow(2).mean().sqrt())
                        rows.append(
                            {
                                "width": int(width),
                                "seed": int(seed),
                                "step": t,
                                "layer": f"layers.{l}",
                                "ratio": prod / (rw * rd),
                                "rms_product": prod,
                                "rms_weight": rw,
                                "rms_dphi": rd,
                            }
                        )
    return pd.DataFrame(rows)


def omega_intervals(profile: pd.DataFrame) -> pd.DataFrame:
    """Per layer: ω_l, the slope of RMS(W Δφ) and of RMS(Δφ), fitted per (seed, step); mean, min, max.

    One row per layer: ``omega, omega_lo, omega_hi, product_slope(_lo, _hi), dphi_slope(_lo, _hi), fits``.
    """
    rows = []
    for layer, grp in profile.groupby("layer", sort=True):
        fits = pd.DataFrame(
            [
                {
                    k: loglog_slope(g.width, g[col])
                    for k, col in (("omega", "ratio"), ("product_slope", "rms_product"), ("dphi_slope", "rms_dphi"))
                }
                for _, g in grp.groupby(["seed", "step"])
            ]
        )
        row = {"layer": layer, "fits": len(fits)}
        for k in ("omega", "product_slope", "dphi_slope"):
            row.update({k: float(fits[k].mean()), f"{k}_lo": float(fits[k].min()), f"{k}_hi": float(fits[k].max())})
        rows.append(row)
    return pd.DataFrame(rows)
