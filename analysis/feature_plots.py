"""Two width-scaling figures of issue 30 (theory measurements, not sweeps).

- :func:`plot_feature_change`: RMS Δφ of the last hidden layer against width, one line per setting
  (``mutransfer alignment --settings ...``'s ``alignment_profile.parquet``), a panel per training step:
  the TP NTK-style control beside TP μP and BP's NTK and μP (slope −½: the kernel regime; 0: features learn).
- :func:`plot_pc_distance`: 1 − cos(PC update, BP gradient) against width after PC training, one line per
  depth (``python -m trainers._pc_interp_trained``'s Parquet): levelling off means PC at γ̄_L = −1 stays away
  from the gradient.

    python -m analysis.feature_plots feature-change docs/theory/alignment_tp_ntk/alignment_profile.parquet \\
        --steps 1,10,50 --out docs/theory/alignment_tp_ntk/feature_change.png
    python -m analysis.feature_plots pc-distance docs/theory/pc_interpolation_pc/depth3.parquet \\
        docs/theory/pc_interpolation_pc/depth5.parquet --out docs/theory/pc_interpolation_pc/pc_distance.png
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import COLUMN_IN, DOUBLE_IN, DPI, FORMATS, _save, plt, styled


def _slope(x, y) -> float:
    """Least-squares slope of log2 y against log2 x over the finite positive points (NaN with fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log2(x[ok]), np.log2(y[ok]), 1)[0])


def last_hidden(profile: pd.DataFrame) -> pd.DataFrame:
    """The rows of each setting's last layer (its input is the last hidden layer's features)."""
    last = profile.groupby(["algorithm", "parametrization"]).layer.transform(
        lambda s: max(s, key=lambda v: int(str(v).rsplit(".", 1)[-1]))
    )
    return profile[profile.layer == last]


def feature_slopes(profile: pd.DataFrame) -> pd.DataFrame:
    """Per setting and step: the slope of log RMS Δφ (last hidden layer, mean over seeds) against log width."""
    t = last_hidden(profile)
    g = t.groupby(["algorithm", "parametrization", "step", "width"]).rms_dphi.mean().reset_index()
    rows = [
        {"algorithm": a, "parametrization": p, "step": s, "dphi_slope": _slope(d.width, d.rms_dphi)}
        for (a, p, s), d in g.groupby(["algorithm", "parametrization", "step"])
    ]
    return pd.DataFrame(rows)


@styled
def plot_feature_change(
    profile: pd.DataFrame,
    path: str | Path,
    steps: Sequence[int] | None = None,
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
) -> Path:
    """RMS Δφ of the last hidden layer against width (log-log), one line per setting, a panel per step.

    ``steps``: the panels (default the first, a middle and the last recorded step). The legend gives each
    setting's slope at that step; the dotted guide has slope −½ (the kernel regime).
    """
    t = last_hidden(profile)
    recorded = sorted(int(s) for s in t.step.unique())
    if steps is None:
        steps = sorted({recorded[0], recorded[len(recorded) // 2], recorded[-1]})
    steps = [s for s in steps if s in recorded] or recorded[-1:]
    fig, axes = plt.subplots(
        1,
        len(steps),
        figsize=(COLUMN_IN if len(steps) <= 2 else DOUBLE_IN, 2.4),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    settings = list(dict.fromkeys(zip(t.algorithm, t.parametrization)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, step in zip(axes[0], steps):
        d = t[t.step == step]
        for i, (a, p) in enumerate(settings):
            s = d[(d.algorithm == a) & (d.parametrization == p)]
            m = s.groupby("width").rms_dphi.mean()
            color = colors[i % len(colors)]
            ax.plot(s.width, s.rms_dphi, ".", color=color, alpha=0.35, ms=2.5)
            ax.plot(m.index, m.values, "-o", color=color, ms=3, label=f"{a} {p} ({_slope(m.index, m.values):+.2f})")
        w = np.array(sorted(d.width.unique()), float)
        if len(w) and np.isfinite(d.rms_dphi).any():
            ref = float(d.rms_dphi[d.width == w[0]].median())
            ax.plot(w, ref * (w / w[0]) ** -0.5, ":", color="0.4", lw=0.8, label="slope −½")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"step {step}")
        ax.set_xlabel("width")
        ax.legend(frameon=False, fontsize=6)
    axes[0][0].set_ylabel("RMS Δφ, last hidden layer")
    return _save(fig, path, dpi, formats)


@styled
def plot_pc_distance(table: pd.DataFrame, path: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS) -> Path:
    """1 − cos(PC update, BP gradient) against width (log-log), one line per (depth, c), seeds as points."""
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    t = table[table.one_minus_cos.notna()]
    for (depth, c), d in t.groupby(["depth", "c"]):
        m = d.groupby("width").one_minus_cos.mean()
        (line,) = ax.plot(
            m.index, m.values, "-o", ms=3, label=f"L = {depth}, c = {c:g} (slope {_slope(m.index, m.values):+.2f})"
        )
        ax.plot(d.width, d.one_minus_cos, ".", color=line.get_color(), alpha=0.35, ms=2.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=10)
    ax.set_xlabel("width")
    ax.set_ylabel("1 − cos(PC, BP gradient)")
    ax.set_title("after PC training, γ_L = c·m")
    ax.legend(frameon=False)
    return _save(fig, path, dpi, formats)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.feature_plots {feature-change,pc-distance} PARQUET... --out PNG``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m analysis.feature_plots", description=__doc__.split("\n")[0])
    p.add_argument("figure", choices=["feature-change", "pc-distance"])
    p.add_argument("tables", nargs="+", help="Parquet files (stacked)")
    p.add_argument("--steps", default=None, help="feature-change: the steps shown (default first, middle, last)")
    p.add_argument("--out", required=True, help="the PNG (an SVG is written beside it)")
    a = p.parse_args(argv)
    try:
        table = pd.concat([pd.read_parquet(f) for f in a.tables], ignore_index=True)
        steps = [int(s) for s in a.steps.split(",") if s.strip()] if a.steps else None
    except (OSError, ValueError) as exc:
        print(f"analysis.feature_plots: {exc}", file=sys.stderr)
        return 2
    needed = {
        "feature-change": {"algorithm", "parametrization", "layer", "step", "width", "rms_dphi"},
        "pc-distance": {"depth", "c", "width", "one_minus_cos"},
    }[a.figure]
    if not needed <= set(table.columns):
        print(
            f"analysis.feature_plots: {a.figure} needs columns {sorted(needed - set(table.columns))}", file=sys.stderr
        )
        return 2
    if a.figure == "feature-change":
        png = plot_feature_change(table, a.out, steps)
        print(feature_slopes(table).round(3).to_string(index=False))
    else:
        png = plot_pc_distance(table, a.out)
        print(table.groupby(["depth", "c", "width"]).one_minus_cos.agg(["mean", "min", "max"]).to_string())
    print(f"-> {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
