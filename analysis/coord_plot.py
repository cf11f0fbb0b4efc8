"""Plot of a coordinate check: one panel per step, log2 axes, one line per layer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .plots import _save as save_figure  # noqa: E402


def plot_coord_check(table: pd.DataFrame, slopes: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Write a PNG of RMS(h_l(t) − h_l(0)) against width, one panel per step; returns the path."""
    steps = sorted(table.step.unique())
    fig, axes = plt.subplots(1, len(steps), figsize=(4 * len(steps), 3.6), squeeze=False, sharey=True)
    mean = table.groupby(["layer", "step", "width"])["delta_rms"].mean().reset_index()
    for ax, step in zip(axes[0], steps):
        for layer, grp in mean[mean.step == step].groupby("layer"):
            s = slopes[(slopes.layer == layer) & (slopes.step == step)].slope.iloc[0]
            label = f"{layer} (slope {s:+.2f})" if s == s else f"{layer} (does not move)"
            ax.plot(grp.width, grp.delta_rms.clip(lower=1e-30), marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_title(f"step {step}")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("RMS of h_l(t) - h_l(0)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
