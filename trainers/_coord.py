"""Coordinate check: does each layer's feature change scale like width^0?

For each width, train a few steps on one fixed batch and record, per layer l and
step t, RMS(h_l(t) − h_l(0)) and RMS(h_l(t)). The slope of log2 RMS(h_l(t) − h_l(0))
against log2 width is ≈ 0 under a correct μP table; SP at a fixed learning rate
shows a clearly positive output slope.

By default the initial error is made equal at every width: the targets are
y + f_0(x), so the residual the network sees at step 0 is y at every width
(otherwise f_0 = Θ(m^−1/2) under μP makes small widths see larger errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ._base import make_trainer
from ._config import TrainerConfig
from ._data import Dataset, make_teacher_student
from ._fit import loglog_slope

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048)


@dataclass
class CoordCheck:
    """``table``: width, seed, layer, step, delta_rms, rms. ``slopes``: layer, step, slope, moved."""

    table: pd.DataFrame
    slopes: pd.DataFrame

    def max_abs_slope(self, steps=None) -> float:
        """Largest |slope| over layers that moved (and the given steps)."""
        s = self.slopes[self.slopes.moved]
        if steps is not None:
            s = s[s.step.isin(list(steps))]
        return float(s.slope.abs().max())

    def slope(self, layer: str, step: int) -> float:
        row = self.slopes[(self.slopes.layer == layer) & (self.slopes.step == step)]
        return float(row.slope.iloc[0])


def fit_slopes(table: pd.DataFrame, still_tol: float = 1e-10) -> pd.DataFrame:
    """Per (layer, step): least-squares slope of log2 mean delta_rms against log2 width.

    A layer whose change is below ``still_tol`` × its RMS at every width did not
    move: it is reported with ``moved=False`` and slope NaN, not fitted.
    """
    rows = []
    g = table.groupby(["layer", "step", "width"], sort=True)[["delta_rms", "rms"]].mean().reset_index()
    for (layer, step), grp in g.groupby(["layer", "step"], sort=False):
        moved = bool((grp.delta_rms > still_tol * grp.rms.clip(lower=1e-300)).all())
        slope = loglog_slope(grp.width, grp.delta_rms) if moved else float("nan")
        rows.append({"layer": layer, "step": int(step), "slope": slope, "moved": moved})
    return pd.DataFrame(rows)


def coord_check(
    base: TrainerConfig,
    widths=DEFAULT_WIDTHS,
    steps: int = 3,
    seeds=(0,),
    data: Dataset | None = None,
    batch_size: int = 128,
    equalize_error: bool = True,
    target_mean: float = 0.0,
) -> CoordCheck:
    """Run the coordinate check of ``base`` (its width is replaced by each of ``widths``).

    Args:
        base: trainer config (algorithm, parametrization, lr, base_width, ...).
        widths: hidden widths to compare.
        steps: training steps; rows are recorded after steps 1..steps.
        seeds: initialisation seeds; RMS values are averaged over them before fitting.
        data: dataset whose first ``batch_size`` training rows form the fixed batch
            (default: teacher-student regression, d = 32, C = 10).
        batch_size: size of the fixed batch.
        equalize_error: train on targets y + f_0(x) so the initial error is equal at every width.
        target_mean: added to every regression target, so the error has this mean and the
            biases (``bias=True``) get a Θ(1) gradient from step 1.

    Returns:
        :class:`CoordCheck` with the tidy table and the fitted slopes.
    """
    if data is None:
        data = make_teacher_student(n_train=batch_size, n_test=1, seed=1234)
    rows = []
    for width in widths:
        for seed in seeds:
            cfg = base.replace(width=int(width), seed=int(seed))
            trainer = make_trainer(cfg, data.input_dim, data.output_dim)
            x = data.x_train[:batch_size].to(trainer.device, trainer.dtype)
            y = trainer.targets(data.y_train[:batch_size])
            if target_mean:
                if cfg.loss == "ce":
                    raise ValueError("target_mean needs loss='mse'")
                y = y + target_mean
            with torch.no_grad():
                h0 = trainer.model.preactivations(x)
            if equalize_error:
                if cfg.loss == "ce":
                    raise ValueError("equalize_error needs loss='mse'")
                y = y + h0[-1]
            for t in range(1, steps + 1):
                trainer.step(x, y)
                with torch.no_grad():
                    ht = trainer.model.preactivations(x)
                for l, (a, b) in enumerate(zip(h0, ht)):
                    rows.append(
                        {
                            "width": int(width),
                            "seed": int(seed),
                            "layer": f"layers.{l}",
                            "step": t,
                            "delta_rms": float((b - a).pow(2).mean().sqrt()),
                            "rms": float(b.pow(2).mean().sqrt()),
                        }
                    )
    table = pd.DataFrame(rows)
    return CoordCheck(table, fit_slopes(table))
