"""Planted sweeps: synthetic trials/history tables whose optimal learning rate drifts as width^k.

    L(η, w) = a(w) + c · (log2 η − log2 η*(w))² + noise,   η*(w) = η0 · (w / base)^k,
    a(w) = a∞ + (a0 − a∞) · (base / w)^½  (wider is better),

and a trial diverges (status ``diverged``, losses +inf, accuracy NaN) when
log2 η > log2 η*(w) + margin. Used to test that the analysis recovers k. With ``k_per_epoch`` the
history's optimum moves with the epoch (η*_e ∝ width^k_e, the last epoch's k_e = k), to test that
the analysis over training time (``analysis.over_time``) recovers k_e at every epoch.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def planted_trials(
    k: float,
    *,
    name: str = "planted",
    algorithm: str = "bp",
    parametrization: str = "mup",
    inference_steps: int = 20,
    widths=(64, 128, 256, 512, 1024),
    base_width: int = 64,
    log2_lrs=tuple(range(-10, 3)),
    seeds=(0, 1, 2),
    log2_lr0: float = -3.3,
    curvature: float = 0.08,
    noise: float = 0.01,
    margin: float = 2.5,
    a0: float = 0.5,
    a_inf: float = 0.3,
    epochs: int = 3,
    k_per_epoch: float = 0.0,
    steps_per_epoch: int = 15,
    extra: dict | None = None,
    rng_seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and history of one planted group, in the trials/history.parquet columns.

    Args:
        k: the planted drift exponent, η* ∝ width^k.
        name: sweep name.
        algorithm, parametrization, inference_steps: the group.
        widths, base_width: widths of the sweep and the base width.
        log2_lrs: the learning-rate grid in log2.
        seeds: seeds (the noise differs per seed).
        log2_lr0: log2 η* at the base width (off the grid, so the quadratic refinement matters).
        curvature: c, loss per octave² away from η*.
        noise: std of the Gaussian noise on each final loss.
        margin: octaves above η* where training diverges.
        a0, a_inf: best loss at the base width and at infinite width.
        epochs: epochs of the learning curves (history rows).
        k_per_epoch: the history's exponent at epoch e is k + k_per_epoch · (e − epochs) (0: k at every epoch).
        steps_per_epoch: the history's ``sgd_steps`` is epoch · steps_per_epoch (0 at a diverged epoch 1).
        extra: more config columns (e.g. ``{"gamma_bar_L": -1.0}``).
        rng_seed: seed of the noise.

    Returns:
        ``(trials, history)`` data frames.
    """
    rng = np.random.default_rng(rng_seed)
    rows, hist = [], []
    for w in widths:
        x_star = log2_lr0 + k * np.log2(w / base_width)
        a = a_inf + (a0 - a_inf) * (base_width / w) ** 0.5
        for x in log2_lrs:
            for s in seeds:
                cfg = {
                    "sweep": name,
                    "algorithm": algorithm,
                    "parametrization": parametrization,
                    "optimizer": "sgd",
                    "dataset": "fmnist",
                    "model": "mlp",
                    "width": int(w),
                    "base_width": int(base_width),
                    "depth": 3,
                    "lr": float(2.0**x),
                    "inference_steps": int(inference_steps),
                    "seed": int(s),
                    **(extra or {}),
                }
                tid = hashlib.sha1(repr(sorted(cfg.items())).encode()).hexdigest()[:12]
                diverged = x > x_star + margin
                loss = a + curvature * (x - x_star) ** 2 + noise * rng.standard_normal()
                final = np.inf if diverged else float(loss)
                rows.append(
                    {
                        "trial_id": tid,
                        **cfg,
                        "status": "diverged" if diverged else "ok",
                        "final_train_loss": final,
                        "final_test_loss": final * 1.1,
                        "final_test_acc": np.nan if diverged else float(np.clip(1 - loss, 0, 1)),
                        "epochs_done": 1 if diverged else epochs,
                        "wall_s": 1.0,
                        "node": "planted",
                    }
                )
                for e in range(1, (1 if diverged else epochs) + 1):
                    x_e = x_star + k_per_epoch * (e - epochs) * np.log2(w / base_width)
                    loss_e = loss + curvature * ((x - x_e) ** 2 - (x - x_star) ** 2)
                    tl = np.inf if diverged else float(loss_e * (1 + 1.0 / e - 1.0 / epochs))
                    hist.append(
                        {
                            "trial_id": tid,
                            "epoch": e,
                            "train_loss": tl,
                            "test_loss": tl * 1.1,
                            "test_acc": np.nan if diverged else float(np.clip(1 - tl, 0, 1)),
                            "wall_s": float(e),
                            "sgd_steps": 0 if diverged else e * steps_per_epoch,
                            "diverged": bool(diverged),
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(hist)
