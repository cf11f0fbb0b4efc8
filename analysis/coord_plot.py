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


PAR_TITLES = {"sp": "SP", "mup": "μP"}


def _slope_text(slopes: pd.DataFrame, layers: list[str]) -> str:
    parts = []
    for layer in layers:
        s = slopes[slopes.layer == layer].slope
        parts.append("still" if s.empty or s.iloc[0] != s.iloc[0] else f"{s.iloc[0]:+.2f}")
    return "slopes " + " / ".join(parts)


def plot_coord_grid(table: pd.DataFrame, slopes: pd.DataFrame, path: str | Path, title: str = "") -> list[Path]:
    """SP beside μP per algorithm, one panel per step (mup's coordinate-check style), log2-log2 axes.

    ``table`` and ``slopes`` are :func:`trainers.coord_check`'s, concatenated with the columns
    ``algorithm`` and ``parametrization``. One row of panels per algorithm: SP's steps, then μP's;
    panels of a row share their y axis, so SP's growth and μP's flat lines are read on one scale. Each
    panel's title gives the fitted slope of every layer (``still``: the layer does not move). One
    legend for the layers, below the panels. Writes ``path`` (PNG, 150 dpi) and the same name as SVG;
    returns both paths.
    """
    algorithms = list(dict.fromkeys(table.algorithm))
    pars = [p for p in ("sp", "mup") if p in set(table.parametrization)]
    steps = sorted(table.step.unique())
    layers = sorted(table.layer.unique(), key=lambda s: int(s.rsplit(".", 1)[-1]))
    colors = {layer: plt.cm.viridis(i / max(1, len(layers) - 1) * 0.85) for i, layer in enumerate(layers)}
    ncols = len(pars) * len(steps)
    fig, axes = plt.subplots(
        len(algorithms),
        ncols,
        figsize=(2.6 * ncols + 0.6, 2.6 * len(algorithms) + 1.0),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    mean = table.groupby(["algorithm", "parametrization", "layer", "step", "width"])["delta_rms"].mean().reset_index()
    for r, alg in enumerate(algorithms):
        for p_i, par in enumerate(pars):
            for s_i, step in enumerate(steps):
                ax = axes[r][p_i * len(steps) + s_i]
                sel = mean[(mean.algorithm == alg) & (mean.parametrization == par) & (mean.step == step)]
                for layer in layers:
                    grp = sel[sel.layer == layer]
                    ax.plot(
                        grp.width, grp.delta_rms.clip(lower=1e-30), marker="o", ms=3, color=colors[layer], label=layer
                    )
                ax.set_xscale("log", base=2)
                ax.set_yscale("log", base=2)
                sl = slopes[(slopes.algorithm == alg) & (slopes.parametrization == par) & (slopes.step == step)]
                ax.set_title(
                    f"{alg.upper()} {PAR_TITLES.get(par, par)}, step {step}\n{_slope_text(sl, layers)}", fontsize=8
                )
                ax.tick_params(labelsize=7)
                if r == len(algorithms) - 1:
                    ax.set_xlabel("width", fontsize=8)
        axes[r][0].set_ylabel("RMS of h_l(t) − h_l(0)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(layers), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    svg = path.with_suffix(".svg")
    fig.savefig(svg)
    plt.close(fig)
    return [path, svg]
