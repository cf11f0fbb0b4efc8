"""Plots of the theory measurements: PC's update geometry and the last-layer alignment exponent."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REFERENCES = {"cos_bp": "BP gradient", "cos_gn": "activity Gauss-Newton", "cos_gn_param": "parameter Gauss-Newton"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _step_order(label: str) -> float:
    return float("inf") if label == "inf" else float(label)


def plot_pc_geometry(
    table: pd.DataFrame, path: str | Path, layer: str = "all", references: tuple[str, ...] = ("cos_bp", "cos_gn")
) -> Path:
    """1 − cos(d_PC, reference) against width, log-log; one line per inference step count T.

    Rows: network (linear, tanh); columns: (γ̄_L, reference). ``table`` is
    ``trainers.pc_geometry``'s output (mean over seeds is taken here).

    Returns:
        The PNG's path.
    """
    t = table[table.layer == layer]
    nets = list(dict.fromkeys(t.network))
    gbars = sorted(t.gamma_bar_L.unique(), reverse=True)
    cols = [(g, r) for g in gbars for r in references]
    fig, axes = plt.subplots(
        len(nets), len(cols), figsize=(3.6 * len(cols), 3.2 * len(nets)), squeeze=False, sharex=True
    )
    mean = t.groupby(["network", "gamma_bar_L", "steps", "width"])[list(references)].mean().reset_index()
    steps = sorted(mean.steps.unique(), key=_step_order)
    colors = dict(zip(steps, plt.cm.viridis(np.linspace(0, 0.9, len(steps)))))
    for i, net in enumerate(nets):
        for j, (g, ref) in enumerate(cols):
            ax = axes[i][j]
            for s in steps:
                grp = mean[(mean.network == net) & (mean.gamma_bar_L == g) & (mean.steps == s)]
                if grp.empty:
                    continue
                label = "converged" if s == "inf" else f"T = {s}"
                ax.plot(grp.width, (1 - grp[ref]).clip(lower=1e-12), marker="o", color=colors[s], label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{net}, γ̄_L = {g:g}: vs {REFERENCES.get(ref, ref)}", fontsize=9)
            if i == len(nets) - 1:
                ax.set_xlabel("width")
            if j == 0:
                ax.set_ylabel(f"1 − cos (PC update, ·), {layer}")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_alignment(table: pd.DataFrame, fits: pd.DataFrame, path: str | Path) -> Path:
    """Alignment ratio r(n) = RMS(W Δφ) / (RMS W · RMS Δφ) against width, log-log, one line per setting.

    ``table``: per-width rows with ``algorithm, parametrization, width, ratio`` (seeds averaged here);
    ``fits``: one row per (algorithm, parametrization) with ``omega``. Guides: n^{1/2} and n^1.

    Returns:
        The PNG's path.
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    mean = table.groupby(["algorithm", "parametrization", "width"]).ratio.mean().reset_index()
    for (alg, par), grp in mean.groupby(["algorithm", "parametrization"]):
        om = fits[(fits.algorithm == alg) & (fits.parametrization == par)].omega.iloc[0]
        ax.plot(
            grp.width,
            grp.ratio,
            marker="o",
            linestyle="-" if par == "mup" else "--",
            label=f"{alg.upper()} {par} (ω_L = {om:.2f})",
        )
    w = np.asarray(sorted(mean.width.unique()), float)
    r0 = float(mean.ratio.min())
    for p, style in ((0.5, ":"), (1.0, "-.")):
        ax.plot(w, r0 * (w / w[0]) ** p, color="gray", linestyle=style, linewidth=0.8, label=f"∝ n^{p:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("width n")
    ax.set_ylabel("RMS(W_L Δφ) / (RMS W_L · RMS Δφ)")
    ax.set_title("last-layer alignment: ω_L = slope")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


INTERP_PANELS = (
    ("cos_bp", "cos(PC, BP gradient)"),
    ("cos_gn", "cos(PC, activity GN)"),
    ("cos_gn_param", "cos(PC, parameter GN)"),
    ("fcos_pc", "cos(J·d_PC, residual)"),
)


def plot_pc_interpolation(table: pd.DataFrame, path: str | Path) -> Path:
    """Cosine against c (γ_L = c·m, log axis) per width, after μP training; mean over seeds, min–max band.

    Rows: batch size; columns: PC's update against BP's gradient, the activity-space and the
    parameter-space Gauss-Newton directions, and in function space against the residual (dotted:
    BP's gradient's and the activity GN direction's own cos(J·d, r) at the widest width).
    ``table`` is ``trainers.pc_interpolation``'s output.
    """
    sizes = sorted(table.batch_size.unique())
    widths = sorted(table.width.unique())
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.85, len(widths)))))
    fig, axes = plt.subplots(
        len(sizes),
        len(INTERP_PANELS),
        figsize=(3.5 * len(INTERP_PANELS), 2.9 * len(sizes) + 0.5),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for i, B in enumerate(sizes):
        for j, (col, label) in enumerate(INTERP_PANELS):
            ax = axes[i][j]
            for w in widths:
                g = table[(table.batch_size == B) & (table.width == w)].groupby("c")[col]
                mean, lo, hi = g.mean(), g.min(), g.max()
                ax.plot(mean.index, mean.values, marker="o", ms=3, color=colors[w], label=f"width {w}")
                ax.fill_between(mean.index, lo.values, hi.values, color=colors[w], alpha=0.2, lw=0)
            if col == "fcos_pc":
                wide = table[(table.batch_size == B) & (table.width == widths[-1])]
                ax.axhline(wide.fcos_bp.mean(), color="0.4", ls=":", lw=1, label="BP gradient")
                ax.axhline(wide.fcos_gn.mean(), color="0.7", ls="--", lw=1, label="activity GN")
            ax.set_xscale("log")
            ax.set_title(f"{label}, batch {B}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(sizes) - 1:
                ax.set_xlabel("c  (γ_L = c·m)", fontsize=8)
    handles, labels = axes[-1][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
