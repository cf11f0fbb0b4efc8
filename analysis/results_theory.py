"""The claims of docs/RESULTS.md that measurements at fixed width decide, generated from committed data.

Two rows of issue 30, each read from its committed Parquet (``python -m analysis.results_doc`` writes them
between ``<!-- fixed-width claims -->`` and ``<!-- end fixed-width claims -->``):

- **TP has no kernel regime** (``docs/theory/alignment_tp_ntk/alignment_profile.parquet``, from
  ``mutransfer alignment --settings ...``): the slope of log RMS Δφ of the last hidden layer against log
  width, per seed, at the first and the last recorded step, for TP and BP under μP and the NTK-style tables.
- **PC at γ̄_L = −1 stays away from the gradient** (``docs/theory/pc_interpolation_pc/depth*.parquet``,
  from ``python -m trainers._pc_interp_trained``): 1 − cos(PC update, BP gradient) after PC training, per
  depth, against width, and its slope per seed.

The rule that turns a slope into a word is :func:`regime`: within :data:`NEAR` of 0, the features move
at every width (no kernel regime; PC stays away from the gradient); within :data:`NEAR` of −½ or below,
they freeze like the kernel regime (PC's distance from the gradient falls like BP-trained data's);
anything else is "between", and said so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .feature_plots import _slope, last_hidden

# How close to 0 (or to -1/2) a width slope must be to count as that regime.
NEAR = 0.1
KERNEL = -0.5
ALIGNMENT_TP_NTK = Path("theory/alignment_tp_ntk/alignment_profile.parquet")
PC_DISTANCE = Path("theory/pc_interpolation_pc")


def regime(slope: float) -> str:
    """``flat`` (|slope| ≤ NEAR), ``kernel`` (slope ≤ −½ + NEAR) or ``between``; ``n/a`` for NaN."""
    if not np.isfinite(slope):
        return "n/a"
    if abs(slope) <= NEAR:
        return "flat"
    return "kernel" if slope <= KERNEL + NEAR else "between"


def _fmt(x: float) -> str:
    return format(x, "+.2f").replace("-", "−")


def _spread(values: pd.Series) -> str:
    """``mean [min, max]`` over seeds."""
    return f"{_fmt(values.mean())} [{_fmt(values.min())}, {_fmt(values.max())}]"


def feature_slopes_per_seed(profile: pd.DataFrame) -> pd.DataFrame:
    """Per setting, step and seed: the slope of log2 RMS Δφ (last hidden layer) against log2 width."""
    t = last_hidden(profile)
    rows = [
        {"algorithm": a, "parametrization": p, "step": s, "seed": seed, "slope": _slope(d.width, d.rms_dphi)}
        for (a, p, s, seed), d in t.groupby(["algorithm", "parametrization", "step", "seed"])
    ]
    return pd.DataFrame(rows)


def tp_kernel_row(profile: pd.DataFrame) -> str:
    """The claims row "TP has no kernel regime", from ``alignment_profile.parquet``."""
    slopes = feature_slopes_per_seed(profile)
    first, last = int(slopes.step.min()), int(slopes.step.max())
    widths = sorted(int(w) for w in profile.width.unique())
    seeds = profile.seed.nunique()
    cells, tp_last = [], {}
    for (a, p), d in slopes.groupby(["algorithm", "parametrization"], sort=False):
        s0, s1 = d[d.step == first].slope, d[d.step == last].slope
        if a == "tp":
            tp_last[p] = float(s1.mean())
        cells.append(f"{a} {p}: {_spread(s0)} at step {first}, {_spread(s1)} at step {last} ({regime(s1.mean())})")
    words = {p: regime(s) for p, s in tp_last.items()}
    if words and all(w == "flat" for w in words.values()):
        answer = "**yes**: TP's features move at every width under every table tried"
    elif any(w == "kernel" for w in words.values()):
        answer = "**no**: " + ", ".join(p for p, w in words.items() if w == "kernel") + " freezes TP's features"
    else:
        answer = "**partly**: " + "; ".join(f"TP {p} {w} ({_fmt(tp_last[p])})" for p, w in words.items())
    answer += f" at step {last}"
    setting = (
        f"slope of log RMS Δφ (last hidden layer) against log width {widths[0]}–{widths[-1]}, mean [min, max] "
        f"of {seeds} seeds; flat = within {NEAR} of 0, kernel = within {NEAR} of −½ or below"
    )
    return (
        "| TP has no kernel regime (its last hidden features keep moving as width grows) | "
        f"{answer} | {setting}: " + "; ".join(cells) + " ([alignment, NTK control](#tp-ntk-control)) |"
    )


def pc_distance_row(table: pd.DataFrame) -> str:
    """The claims row "PC at γ̄_L = −1 stays away from the gradient", from the PC-trained interpolation data.

    Per depth: 1 − cos at the smallest and largest width, its width slope per seed over all widths and
    over the upper half of them (where "levels off" is decided: within :data:`NEAR` of 0)."""
    t = table[table.one_minus_cos.notna()]
    widths = sorted(int(w) for w in t.width.unique())
    upper = widths[len(widths) // 2 :]
    cells, words = [], []
    for (depth, c), d in t.groupby(["depth", "c"]):
        seeds = [s for _, s in d.groupby("seed")]
        all_w = pd.Series([_slope(s.width, s.one_minus_cos) for s in seeds], dtype=float)
        up = [s[s.width.isin(upper)] for s in seeds]
        up_w = pd.Series([_slope(s.width, s.one_minus_cos) for s in up], dtype=float)
        m = d.groupby("width").one_minus_cos.mean()
        word = "levels off" if regime(up_w.mean()) == "flat" else "falls"
        words.append(word)
        cells.append(
            f"L = {depth}, c = {c:g}: 1 − cos {m.iloc[0]:.3g} at {widths[0]} → {m.iloc[-1]:.3g} at {widths[-1]}, "
            f"slope {_spread(all_w)} over {widths[0]}–{widths[-1]}, {_spread(up_w)} over {upper[0]}–{upper[-1]} "
            f"({word})"
        )
    if words and all(w == "levels off" for w in words):
        answer = f"**yes**: 1 − cos levels off from width {upper[0]} at every depth"
    elif words and all(w == "falls" for w in words):
        answer = f"**no**: 1 − cos still falls with width from {upper[0]} to {upper[-1]} at every depth"
    else:
        answer = "**partly**: " + ", ".join(c.split(":")[0] + f" {w}" for c, w in zip(cells, words))
    n_seeds = t.seed.nunique()
    setting = (
        f"after PC training (γ̄_L = −1), widths {widths[0]}–{widths[-1]}, {n_seeds} seeds; slope of log 1 − cos "
        f"against log width, mean [min, max] over seeds; levels off = within {NEAR} of 0 over the upper widths"
    )
    return (
        "| PC at γ̄_L = −1 stays away from BP's gradient as width grows, after PC training | "
        f"{answer} | {setting}: "
        + "; ".join(cells)
        + " ([PC interpolation after PC training](#pc-interpolation-pc-trained)) |"
    )


def fixed_width_block(docs: Path) -> str:
    """The generated fixed-width claims table (rows whose data is not committed are left out, and said so)."""
    lines = ["| claim of the paper | reproduced? | evidence (generated from the committed data) |", "|---|---|---|"]
    if (docs / ALIGNMENT_TP_NTK).exists():
        lines.append(tp_kernel_row(pd.read_parquet(docs / ALIGNMENT_TP_NTK)))
    parts = sorted((docs / PC_DISTANCE).glob("depth*.parquet"))
    if parts:
        lines.append(pc_distance_row(pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)))
    if len(lines) == 2:
        lines.append("| (no fixed-width measurement of issue 30 is committed yet) | | |")
    return "\n".join(lines) + "\n"
