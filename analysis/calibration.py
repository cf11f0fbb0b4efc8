"""Calibration of the verdict on planted sweeps: does a nominal 95 % interval hold the truth 95 % of the time?

A planted group's optimum at width w and seed s lies at

    x*_sw = x0 + k · log2(w / base) + ε_sw,      ε_sw ~ N(0, σ²)  (σ in octaves),

its loss is ``a(w) · (1 + c · (x − x*_sw)²)`` on a quarter-octave grid (c per octave², so an
optimum missed by d octaves costs a relative regret c·d²), and training diverges above
``x*_sw + margin``. Each replicate is one group (an extra key ``replicate``), so one call of
:func:`analysis.transfer.analyze` judges hundreds of replicates.

:func:`coverage` measures, for one design, how often k's interval holds the planted k and how
often the group's own verdict (before the SP-control rule) is ``transfers``, at a fixed number
of seeds or with verify's adaptive seeding (looks at each count of a seed schedule, each at
:func:`analysis.stats.look_level`). ``docs/CALIBRATION.md`` is written from it
(``python -m analysis.calibration``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import LEVEL, look_level
from .transfer import analyze

WIDTHS = (64, 128, 256, 512)


def planted_noisy_optima(
    k: float,
    *,
    n_seeds: int,
    sigma: float,
    replicates: int = 1,
    widths=WIDTHS,
    base_width: int = 64,
    step: float = 0.25,
    half_span: float = 2.0,
    curvature: float = 0.5,
    margin: float = 1.0,
    x0: float = -4.1,
    base_sigma: float | None = None,
    width_sigma: tuple[float, ...] | None = None,
    shift_at_widest: float = 0.0,
    parametrization: str = "mup",
    rng_seed: int = 0,
) -> pd.DataFrame:
    """A trials table of ``replicates`` planted groups whose per-seed optima scatter by ``sigma`` octaves.

    Args:
        k: planted drift exponent.
        base_sigma: the seed noise at the base width (default ``sigma``).
        width_sigma: the seed noise at each width (replaces ``sigma`` and ``base_sigma``).
        shift_at_widest: octaves added to the true optimum at the widest width only (a real shift).
        half_span: the grid spans ± this many octaves around the true optimum's base position,
            moved with the planted drift (as verify's bracket follows the base η*).
    """
    rng = np.random.default_rng(rng_seed)
    parts = []
    offsets = np.arange(-half_span, half_span + step / 2, step)
    for w in widths:
        true = x0 + k * np.log2(w / base_width) + (shift_at_widest if w == max(widths) else 0.0)
        grid = np.round(true / step) * step + offsets
        sd = base_sigma if (w == base_width and base_sigma is not None) else sigma
        sd = width_sigma[list(widths).index(w)] if width_sigma is not None else sd
        x_star = true + sd * rng.standard_normal((replicates, n_seeds))
        rep, seed, x = (a.ravel() for a in np.meshgrid(np.arange(replicates), np.arange(n_seeds), grid, indexing="ij"))
        xs = x_star[rep, seed]
        diverged = x > xs + margin
        a = 0.3 + 0.2 * (base_width / w) ** 0.5
        parts.append(
            pd.DataFrame(
                {
                    "trial_id": [f"{parametrization}-{w}-{r}-{s}-{v:g}" for r, s, v in zip(rep, seed, x)],
                    "algorithm": "bp",
                    "parametrization": parametrization,
                    "inference_steps": 0,
                    "replicate": rep,
                    "width": int(w),
                    "base_width": int(base_width),
                    "lr": 2.0**x,
                    "seed": seed,
                    "status": np.where(diverged, "diverged", "ok"),
                    "final_train_loss": np.where(diverged, np.inf, a * (1 + curvature * (x - xs) ** 2)),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def true_slope(k: float, widths, shift_at_widest: float = 0.0) -> float:
    """The least-squares slope of the planted optima against log2 width (``k`` without a shift)."""
    lw = np.log2(np.asarray(widths, float))
    x = k * lw + np.where(lw == lw.max(), shift_at_widest, 0.0)
    return float(np.polyfit(lw, x, 1)[0])


def true_excess_regret(
    k: float,
    sigma: float,
    widths=WIDTHS,
    base_width: int = 64,
    curvature: float = 0.5,
    shift_at_widest: float = 0.0,
    base_sigma: float | None = None,
    width_sigma: tuple[float, ...] | None = None,
    **_,
) -> float:
    """The largest expected excess regret over the other widths: c·(d_w² + σ_w² − σ_base²).

    d_w is the true optimum's distance from the base width's; each seed's regret also carries its
    own optimum's scatter σ_w² (the leave-one-out base estimate's error is the same at every width).
    """
    sd = {w: sigma for w in widths}
    if base_sigma is not None:
        sd[base_width] = base_sigma
    if width_sigma is not None:
        sd = dict(zip(widths, width_sigma))
    out = []
    for w in widths:
        if w == base_width:
            continue
        d = k * np.log2(w / base_width) + (shift_at_widest if w == max(widths) else 0.0)
        out.append(curvature * (d**2 + sd[w] ** 2 - sd[base_width] ** 2))
    return float(max(out))


def _judge(trials: pd.DataFrame, n_seeds: int, level: float, max_drift: float, max_regret: float) -> pd.DataFrame:
    g = analyze(trials[trials.seed < n_seeds], max_drift=max_drift, max_regret=max_regret, level=level).groups
    return g.set_index("replicate").sort_index()


def coverage(
    k: float,
    *,
    n_seeds: int | list[int],
    sigma: float,
    replicates: int = 200,
    max_drift: float = 0.2,
    max_regret: float = 0.05,
    rng_seed: int = 0,
    **planted,
) -> dict:
    """How often k's interval holds the planted ``k``, and how often the group's own verdict is each one.

    ``n_seeds`` an int: one look at that many seeds (95 %). A list (a seed schedule such as
    ``[3, 6, 8]``): verify's adaptive design, each look at ``look_level(len(schedule))``, a
    replicate stopping at the first look whose verdict is not ``inconclusive``.

    Returns:
        ``{"k_coverage", "regret_coverage", "transfers", "drifts", "inconclusive", "mean_seeds", "mean_width"}``.
    """
    schedule = [n_seeds] if isinstance(n_seeds, int) else list(n_seeds)
    level = LEVEL if len(schedule) == 1 else look_level(len(schedule))
    trials = planted_noisy_optima(
        k, n_seeds=schedule[-1], sigma=sigma, replicates=replicates, rng_seed=rng_seed, **planted
    )
    final = _judge(trials, schedule[0], level, max_drift, max_regret)
    seeds_used = pd.Series(schedule[0], index=final.index)
    for n in schedule[1:]:
        open_ = final.index[final.own_verdict == "inconclusive"]
        if not len(open_):
            break
        look = _judge(trials[trials.replicate.isin(open_)], n, level, max_drift, max_regret)
        final.loc[open_] = look.loc[open_, final.columns]
        seeds_used[open_] = n
    k_true = true_slope(k, planted.get("widths", WIDTHS), planted.get("shift_at_widest", 0.0))
    held = (final.drift_lo <= k_true) & (k_true <= final.drift_hi)
    true_regret = true_excess_regret(k, sigma, **planted)
    regret_held = (final.regret_lo <= true_regret + 1e-12) & (true_regret - 1e-12 <= final.regret_hi)
    counts = final.own_verdict.value_counts(normalize=True)
    return {
        "k_coverage": float(held.mean()),
        "regret_coverage": float(regret_held.mean()),
        **{v: float(counts.get(v, 0.0)) for v in ("transfers", "drifts", "inconclusive")},
        "mean_seeds": float(seeds_used.mean()),
        "mean_width": float((final.drift_hi - final.drift_lo).mean()),
    }
