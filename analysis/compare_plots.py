"""The comparison's figure: η* against width with every sweep's groups (analysis/plots.py's style:
one column wide, 7 pt text, one legend below the panels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import COLUMN_IN, DPI, FORMATS, LEGEND_ROW_IN, _save, group_label, plt, styled
from .transfer import TransferResult

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")


def sweep_styles(n: int) -> list[tuple[str, str]]:
    """``(marker, line style)`` of each of ``n`` sweeps, all different while ``n`` <= 8."""
    return [(MARKERS[i % len(MARKERS)], LINE_STYLES[i % len(LINE_STYLES)]) for i in range(n)]


def colour_keys(result: TransferResult) -> list[str]:
    """The keys that name a line's colour: parametrization and the keys that vary between the sweep's
    groups (a key the sweep holds fixed, e.g. PC's T, is in the comparison's setup differences)."""
    g = result.groups
    return [k for k in result.keys if k == "parametrization" or (k != "algorithm" and g[k].astype(str).nunique() > 1)]


def colour_label(group, keys: list[str]) -> str:
    """The group's colour key: its label (:func:`analysis.plots.group_label`) without the algorithm,
    which the panel names: ``μP``, ``SP depth=5``."""
    label = group_label(group, ["algorithm", *keys])
    return label.split(" ", 1)[1] if "algorithm" in dict(group) and " " in label else label


def group_colours(labels: list[str]) -> dict[str, str | tuple]:
    """One colour per colour key: μP blue and SP orange when those are all, else tab10 (tab20 beyond ten)."""
    if set(labels) <= {"μP", "SP"}:
        return {lab: {"μP": "tab:blue", "SP": "tab:orange"}[lab] for lab in labels}
    if len(labels) <= 10:
        return {lab: f"C{j}" for j, lab in enumerate(labels)}
    cmap = plt.get_cmap("tab20")
    return {lab: cmap(j % 20) for j, lab in enumerate(labels)}


@styled
def plot_lr_star_compare(
    sweeps: list[tuple[str, TransferResult]],
    path: str | Path,
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
) -> Path | None:
    """η* (mean over seeds) against width on log2 axes, one panel per algorithm: one colour per group
    (:func:`colour_label`: the same group has the same colour in every sweep), one marker and line style
    per sweep. ``sweeps``: each sweep's label and its own analysis. None when no sweep has an η*.

    Returns:
        The PNG's path, or None.
    """
    from matplotlib.lines import Line2D

    lines = []  # (algorithm, colour key, sweep index, widths, lr_star)
    for i, (_, r) in enumerate(sweeps):
        keys = colour_keys(r)
        pw_all = r.per_width.astype({k: str for k in r.keys})
        for _, g in r.groups.iterrows():
            mask = np.ones(len(pw_all), dtype=bool)
            for k in r.keys:
                mask &= (pw_all[k] == str(g[k])).to_numpy()
            pw = r.per_width[mask].sort_values("width")
            pw = pw[np.isfinite(pw.lr_star.astype(float))]
            if not pw.empty:
                lines.append((str(g.get("algorithm", "")), colour_label(g, keys), i, pw.width, pw.lr_star))
    if not lines:
        return None
    algos = list(dict.fromkeys(a for a, *_ in lines))
    groups = list(dict.fromkeys(lab for _, lab, *_ in lines))
    colours = group_colours(groups)
    styles = sweep_styles(len(sweeps))
    n_entries = len(groups) + len(sweeps)
    ncol = 2 if n_entries > 6 else 1
    legend_h = LEGEND_ROW_IN * (-(-n_entries // ncol)) + 0.15
    fig, axes = plt.subplots(
        len(algos),
        1,
        figsize=(COLUMN_IN, 1.5 * len(algos) + 0.15 + legend_h),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for r, algo in enumerate(algos):
        ax = axes[r][0]
        for a, lab, i, w, y in lines:
            if a == algo:
                marker, ls = styles[i]
                ax.plot(w, y, marker=marker, ms=3, ls=ls, color=colours[lab])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"{algo.upper()}: η* against width" if algo else "η* against width")
        ax.set_ylabel("η* (mean over seeds)")
    axes[-1][0].set_xlabel("width")
    handles = [Line2D([], [], color=colours[lab], lw=1.5) for lab in groups]
    handles += [Line2D([], [], color="0.3", marker=m, ms=3, ls=ls) for m, ls in styles]
    names = groups + [label for label, _ in sweeps]
    fig.legend(handles, names, loc="outside lower center", ncol=ncol, frameon=False, handletextpad=0.5)
    return _save(fig, path, dpi, formats)
