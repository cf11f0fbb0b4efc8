"""Plots of a transfer analysis: loss against learning rate, η* against width, learning curves.

Facets (loss and learning curves): columns are the parametrizations (SP left, μP right) times the
first further key that varies (e.g. the inference steps T across); rows are the algorithms times
the other varying keys (e.g. γ̄_L × fixed prediction down); one curve per width. A panel is
titled with the keys its group has (BP and TP panels carry no T). Legends lie outside the data.
Every figure is written as PNG (``dpi``, default :data:`DPI`) and, per ``formats``, as SVG or PDF.

Sized for print: a figure is :data:`COLUMN_IN` wide (one column of a two-column paper) or, when its
facets have more than two columns, :data:`DOUBLE_IN`; every text is at least 7 pt at that size
(:data:`STYLE`), and each figure has one legend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .transfer import TransferResult  # noqa: E402

PAR_ORDER = ("sp", "mup")
PAR_LABEL = {"sp": "SP", "mup": "μP"}
DPI = 150
FORMATS = ("png", "svg")  # the report's figures: PNG (embedded in report.html) and a vector copy
COLUMN_IN = 3.3  # inches: one column of a two-column page
DOUBLE_IN = 6.9  # inches: the whole text width, for facets of more than two columns
MIN_PT = 7.0  # the smallest text on a figure, in points at its own size
# Every text at 7 pt (titles 7.5), thin lines: the figures are drawn at the size they are printed.
STYLE = {
    "font.size": MIN_PT,
    "axes.titlesize": 7.5,
    "axes.labelsize": MIN_PT,
    "xtick.labelsize": MIN_PT,
    "ytick.labelsize": MIN_PT,
    "legend.fontsize": MIN_PT,
    "legend.title_fontsize": MIN_PT,
    "figure.titlesize": 8.0,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.2,
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
}


def styled(fn):
    """Run a plot function under :data:`STYLE` (fonts and lines sized for :data:`COLUMN_IN`)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def figure_width(ncols: int) -> float:
    """:data:`COLUMN_IN` for up to two columns of panels, else :data:`DOUBLE_IN`."""
    return COLUMN_IN if ncols <= 2 else DOUBLE_IN


def metric_label(metric: str) -> str:
    """An axis label for a results column: ``final_train_loss`` as ``final train loss``."""
    return str(metric).replace("_", " ")


def _layout(result: TransferResult) -> tuple[list[str], list[tuple], list[str]]:
    """(row keys, row values, parametrizations) of the panel grid."""
    row_keys = [k for k in result.keys if k != "parametrization"]
    rows = sorted({tuple(r) for r in result.groups[row_keys].astype(str).itertuples(index=False)}, key=_natural)
    pars = sorted(
        result.groups.parametrization.astype(str).unique(),
        key=lambda p: (PAR_ORDER.index(p) if p in PAR_ORDER else len(PAR_ORDER), p),
    )
    return row_keys, rows, pars


def _natural(values: tuple) -> tuple:
    """Sort key: numbers by value (T = 5 before T = 20), other strings alphabetically."""
    out = []
    for v in values:
        try:
            out.append((0, float(v), ""))
        except ValueError:
            out.append((1, 0.0, str(v)))
    return tuple(out)


def _select(df: pd.DataFrame, row_keys: list[str], row: tuple, par: str) -> pd.DataFrame:
    mask = df.parametrization.astype(str) == par
    for k, v in zip(row_keys, row):
        mask &= df[k].astype(str) == v
    return df[mask]


def _colors(widths) -> dict:
    widths = sorted(widths)
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(len(widths) - 1, 1) * 0.9) for i, w in enumerate(widths)}


def _facets(result: TransferResult) -> tuple[dict[tuple[int, int], tuple[tuple, str]], int, int, list[str]]:
    """The panel grid: ``{(row, column): (group values without parametrization, parametrization)}``,
    the numbers of rows and columns, and the keys of the group values.

    Columns: parametrization × the first varying key other than algorithm; rows: algorithm × the others.
    """
    row_keys, rows, pars = _layout(result)
    g = result.groups.astype({k: str for k in result.keys})
    varying = [k for k in row_keys if k != "algorithm" and g[k].nunique() > 1]
    across = varying[:1]

    def part(row: tuple, keys) -> tuple:
        return tuple(v for k, v in zip(row_keys, row) if k in keys)

    down = [k for k in row_keys if k not in across]
    col_vals = sorted({part(r, across) for r in rows}, key=_natural)
    row_vals = sorted({part(r, down) for r in rows}, key=_natural)
    cols = [(p, c) for p in pars for c in col_vals]
    cells = {}
    for r in rows:
        for p in pars:
            if not _select(g, row_keys, r, p).empty:
                cells[(row_vals.index(part(r, down)), cols.index((p, part(r, across))))] = (r, p)
    return cells, len(row_vals), len(cols), row_keys


PANEL_H = 1.45  # inches per row of panels
LEGEND_ROW_IN = 0.14  # inches per row of legend entries at 7 pt


def _grid(result: TransferResult, extra_h: float = 0.0):
    """A figure with one panel per group (:func:`_facets`); unused cells are hidden. It is
    :func:`figure_width` wide; ``extra_h`` inches are added below the panels (the legend).

    Returns:
        ``(fig, axes, cells, row_keys)``: ``axes[i][j]`` is the panel of ``cells[(i, j)]``.
    """
    cells, nrows, ncols, row_keys = _facets(result)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(figure_width(ncols), PANEL_H * nrows + 0.15 + extra_h),
        squeeze=False,
        layout="constrained",
    )
    for (i, j), ax in np.ndenumerate(axes):
        if (i, j) not in cells:
            ax.set_visible(False)
    return fig, axes, cells, row_keys


def _edge_labels(fig, axes, cells, xlabel: str, ylabel: str) -> None:
    """The x label on the lowest panel of each column; one y label beside the panels."""
    nrows = axes.shape[0]
    for i, j in cells:
        if not any((r, j) in cells for r in range(i + 1, nrows)):
            axes[i][j].set_xlabel(xlabel)
    fig.supylabel(ylabel, fontsize=MIN_PT)


# Keys that only some algorithms read: a BP or TP panel is not labelled with PC's inference steps.
ONLY_FOR = {
    "inference_steps": ("pc",),
    "inference_lr": ("pc",),
    "gamma_bar_L": ("pc",),
    "pc_init": ("pc",),
    "sequential_inference": ("pc",),
    "feedback_lr": ("tp",),
    "target_step": ("tp",),
    "feedback": ("tp",),
}


# Short names in panel titles and legends.
SHORT = {"inference_steps": "T", "gamma_bar_L": "γ̄_L", "fixed_prediction": "fixed pred."}


def _kv(key: str, value) -> str:
    return f"{SHORT.get(key, key)}={value}"


def _title(row_keys, row, par) -> str:
    algo = dict(zip(row_keys, row)).get("algorithm")
    parts = [
        f"{v}" if k == "algorithm" else _kv(k, v)
        for k, v in zip(row_keys, row)
        if k == "algorithm" or algo is None or algo in ONLY_FOR.get(k, (algo,))
    ]
    head, keys = f"{parts[0].upper() if parts else ''} {PAR_LABEL.get(par, par)}", " ".join(parts[1:])
    if len(head) + len(keys) <= 24:
        return f"{head}  {keys}".rstrip()
    lines = [head, ""]  # the keys below the head, wrapped at TITLE_CHARS (a panel's width at 7.5 pt)
    for part in parts[1:]:
        if lines[-1] and len(lines[-1]) + 1 + len(part) > TITLE_CHARS:
            lines.append("")
        lines[-1] = f"{lines[-1]} {part}".strip()
    return "\n".join(lines)


TITLE_CHARS = 22  # characters of a panel title's line (a quarter of the double-column width)


def _save(fig, path: str | Path, dpi: int = 110, formats: tuple[str, ...] = ("png",)) -> Path:
    """Write ``fig`` to ``path`` (PNG at ``dpi``) and beside it in the other ``formats`` (svg, pdf); close it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    with plt.rc_context({"svg.hashsalt": "mutransfer"}):  # stable element ids in SVG
        for fmt in formats:
            if fmt != path.suffix.lstrip("."):
                fig.savefig(path.with_suffix(f".{fmt}"), dpi=dpi, metadata=_NO_DATE.get(fmt))
    plt.close(fig)
    return path


# No creation date in vector files: the same analysis writes the same bytes (committed figures diff cleanly).
_NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}


def group_label(group: dict | pd.Series, keys: list[str]) -> str:
    """A group as the figures and the report name it: ``PC μP T=10``, ``BP SP`` (only the keys its
    algorithm reads, :data:`ONLY_FOR`)."""
    g = dict(group)
    algo = str(g.get("algorithm", ""))
    parts = [algo.upper()] if algo else []
    if "parametrization" in g:
        parts.append(PAR_LABEL.get(str(g["parametrization"]), str(g["parametrization"])))
    parts += [
        _kv(k, g[k])
        for k in keys
        if k not in ("algorithm", "parametrization") and k in g and (not algo or algo in ONLY_FOR.get(k, (algo,)))
    ]
    return " ".join(parts)


def _legend_height(n_entries: int, ncol: int, title_lines: int = 0) -> float:
    return LEGEND_ROW_IN * (-(-n_entries // ncol) + title_lines) + 0.12


@styled
def plot_loss_vs_lr(
    result: TransferResult, path: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS
) -> Path:
    """Mean loss over seeds against learning rate, one curve per width, η* marked (★).

    The line joins the learning rates every seed measured; the sub-octave points that only some
    seeds measured (each seed is refined around its own optimum) are dots. Diverged learning
    rates are drawn as × above the curves, one row per width. One legend for the figure: the widths
    and the markers that are drawn.

    Returns:
        The PNG's path.
    """
    widths = sorted(result.curves.width.unique())
    limited_any = "edge_limited" in result.per_width and result.per_width.edge_limited.astype(bool).any()
    n_entries = len(widths) + 4 + int(limited_any)
    _, _, ncols, _ = _facets(result)
    lcol = 3 if ncols <= 2 else 6
    fig, axes, cells, row_keys = _grid(result, _legend_height(n_entries, lcol))
    sign = 1.0 if result.mode == "min" else -1.0
    colors = _colors(widths)
    drawn = {"band": False, "part": False, "div": False}
    for (i, j), (row, par) in cells.items():
        ax = axes[i][j]
        cur = _select(result.curves, row_keys, row, par)
        pw = _select(result.per_width, row_keys, row, par)
        seeds = _select(result.table, row_keys, row, par)
        finite = cur[np.isfinite(cur.loss)]
        if finite.empty:
            ax.set_title(_title(row_keys, row, par) + " (no data)")
            continue
        vals = sign * finite.loss
        lo, hi = vals.min(), vals.max()
        best = sign * pw.best_loss[np.isfinite(pw.best_loss)]
        if len(best):  # zoom on the basin: up to 3x the base curve's spread above the best loss
            top = best.max() + 3 * max(float(np.median(vals) - best.min()), 1e-12)
            hi = min(hi, top) if result.mode == "min" else hi
            lo, hi = min(lo, best.min()), max(hi, best.max())  # the fitted optimum may lie below the grid
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        for n, (w, c) in enumerate(cur.groupby("width")):
            full = c[c.n_finite_seeds == c.n_seeds] if "n_finite_seeds" in c else c
            ax.plot(full.lr, sign * full.loss, marker="o", ms=2.5, color=colors[w], label=f"width {w}")
            drawn["band"] |= _seed_band(ax, seeds[seeds.width == w], sign, colors[w])
            part = c[np.isfinite(c.loss) & ~c.index.isin(full.index)]  # refined: some seeds only
            ax.plot(part.lr, sign * part.loss, ".", ms=2.5, color=colors[w], alpha=0.5)
            drawn["part"] |= len(part) > 0
            div = c[~np.isfinite(c.loss)]  # one row of × per width along the top edge
            (marks,) = ax.plot(
                div.lr, np.full(len(div), hi + pad * (1 + 0.5 * n)), "x", color=colors[w], ms=3.5, clip_on=False
            )
            marks.set_in_layout(False)
            drawn["div"] |= len(div) > 0
            p = pw[pw.width == w]
            if len(p) and np.isfinite(p.lr_star.iloc[0]):
                limited = bool(p.edge_limited.iloc[0]) if "edge_limited" in p else False
                ax.plot(
                    p.lr_star,
                    sign * p.best_loss,
                    "*",
                    color=colors[w],
                    ms=7,
                    mec="red" if limited else "k",
                    mew=1.0 if limited else 0.4,
                )
        ax.set_xscale("log", base=2)
        ax.set_ylim(lo - pad, hi + pad * (1.5 + 0.5 * cur.width.nunique()))
        ax.set_title(_title(row_keys, row, par))
    _edge_labels(fig, axes, cells, "learning rate η", f"{metric_label(result.metric)} (mean over seeds)")
    handles, labels = next(((h, lab) for h, lab in (a.get_legend_handles_labels() for a in axes.flat) if h), ([], []))
    if handles:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        marks = [(Line2D([], [], marker="*", ls="", ms=7, color="0.5", mec="k", mew=0.4), "η* (fit)")]
        if limited_any:
            marks.append((Line2D([], [], marker="*", ls="", ms=7, color="0.5", mec="red", mew=1.0), "η* edge-limited"))
        if drawn["div"]:
            marks.append((Line2D([], [], marker="x", ls="", ms=3.5, color="0.3"), "diverged"))
        if drawn["part"]:
            marks.append((Line2D([], [], marker=".", ls="", ms=2.5, color="0.3"), "some seeds only"))
        if drawn["band"]:
            marks.append((Patch(color="0.5", alpha=0.25, lw=0), "range over seeds"))
        fig.legend(
            list(handles) + [h for h, _ in marks],
            list(labels) + [lab for _, lab in marks],
            loc="outside lower center",
            ncol=lcol,
            frameon=False,
            columnspacing=1.0,
            handletextpad=0.4,
        )
    return _save(fig, path, dpi, formats)


def _seed_band(ax, trials: pd.DataFrame, sign: float, color) -> bool:
    """Shade the range over seeds of the loss at the learning rates every seed measured (the solid
    line's); True when a band was drawn."""
    n = trials.seed.nunique()
    t = trials[np.isfinite(trials.loss)]
    spread = t.groupby("lr").loss.agg(["min", "max", "count"])
    spread = spread[spread["count"] == n] if n > 1 else spread.iloc[:0]
    if len(spread) > 1:
        ax.fill_between(spread.index, sign * spread["min"], sign * spread["max"], color=color, alpha=0.15, lw=0)
        return True
    return False


MAX_LINES = 6  # groups per η* panel before the panels are split by the next key


def _panels(result: TransferResult) -> tuple[list[str], list[tuple]]:
    """Keys and values of the η* panels: per algorithm, split by further keys while a panel has too many lines."""
    keys = ["algorithm"]
    rest = [k for k in result.keys if k not in ("algorithm", "parametrization")]
    g = result.groups.astype({k: str for k in result.keys})
    while rest and g.groupby(keys).size().max() > MAX_LINES:
        keys.append(rest.pop(0))
    return keys, sorted({tuple(r) for r in g[keys].itertuples(index=False)}, key=_natural)


def _line_styles(result: TransferResult, panel_keys: list[str]) -> dict[str, tuple]:
    """``{colour key: (colour, line style)}``: a line's colour key is its group without the panel's keys
    and without the keys only some algorithms read (:func:`_colour_key`), so the same parametrization
    and depth have the same colour in every panel; SP dashed."""
    labels = {}
    for _, g in result.groups.iterrows():
        labels.setdefault(_colour_key(g, result.keys, panel_keys), str(g.get("parametrization")))
    names = sorted(labels, key=lambda lab: (labels[lab] != "mup", lab))
    if len(names) == len(set(labels.values())) and set(labels.values()) <= {"sp", "mup"}:
        base = {"mup": "tab:blue", "sp": "tab:orange"}
        return {lab: (base[labels[lab]], "--" if labels[lab] == "sp" else "-") for lab in names}
    return {lab: (f"C{i % 10}", "--" if labels[lab] == "sp" else "-") for i, lab in enumerate(names)}


def _colour_key(g, keys: list[str], panel_keys: list[str]) -> str:
    return " ".join(
        PAR_LABEL.get(str(g[k]), str(g[k])) if k == "parametrization" else _kv(k, g[k])
        for k in keys
        if k not in panel_keys and k not in ONLY_FOR
    )


@styled
def plot_lr_star_vs_width(
    result: TransferResult, path: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS
) -> Path:
    """η* against width on log2 axes, one row of panels per algorithm (and further key when there
    are many groups): left η* of each group (its t interval over seeds at ``result.level`` as a band
    where there are seeds; edge-limited η* ringed in red; k = 0 and k = −1 guides through the base
    width's η*), right the stability edge η_max on its own axis (when anything diverged).

    One legend for the figure: each group by its full name with k, its interval and its verdict.

    Returns:
        The PNG's path.
    """
    keys, panels = _panels(result)
    pw_all = result.per_width.astype({k: str for k in result.keys})
    g_all = result.groups.astype({k: str for k in result.keys})
    has_max = "lr_max" in result.per_width and bool(np.isfinite(result.per_width.lr_max.astype(float)).any())
    limited_any = "edge_limited" in result.per_width and bool(result.per_width.edge_limited.astype(bool).any())
    seeds_any = bool((result.groups.n_seeds > 1).any())
    styles = _line_styles(result, keys)
    n_entries = len(result.groups) + 2 + int(limited_any) + int(seeds_any)
    ncols = 2 if has_max else 1
    fig, axes = plt.subplots(
        len(panels),
        ncols,
        figsize=(COLUMN_IN, 1.6 * len(panels) + 0.15 + _legend_height(n_entries, 1)),
        squeeze=False,
        sharex=True,
        layout="constrained",
        gridspec_kw={"width_ratios": [3, 2]} if has_max else None,
    )
    entries: list[tuple] = []
    guides = False
    for r, panel in enumerate(panels):
        ax = axes[r][0]
        algo = panel[0]
        sel = (g_all[keys] == pd.Series(panel, index=keys)).all(axis=1).to_numpy()
        in_panel = (pw_all[keys] == pd.Series(panel, index=keys)).all(axis=1).to_numpy()
        for i, g in result.groups[sel].iterrows():
            mask = (pw_all[result.keys] == g_all.loc[i, result.keys]).all(axis=1).to_numpy()
            pw = result.per_width[mask].sort_values("width")
            color, ls = styles[_colour_key(g, result.keys, keys)]
            (line,) = ax.plot(pw.width, pw.lr_star, marker="o", ms=3, ls=ls, color=color)
            entries.append((line, f"{group_label(g, result.keys)}: {_k_text(g)}, {g.verdict}"))
            if int(g.n_seeds) > 1:
                band = np.isfinite(pw.lr_star_lo) & np.isfinite(pw.lr_star_hi)
                ax.fill_between(pw.width[band], pw.lr_star_lo[band], pw.lr_star_hi[band], color=color, alpha=0.15, lw=0)
            limited = pw[pw.edge_limited.astype(bool)] if "edge_limited" in pw else pw.iloc[:0]
            ax.plot(limited.width, limited.lr_star, "o", ms=7, mfc="none", mec="red", mew=1.0)
            if has_max:
                axes[r][1].plot(pw.width, pw.lr_max, marker="v", ms=3, ls=ls, color=color)
        guides |= _reference_slopes(ax, result.per_width[in_panel])
        title = " ".join(
            [algo.upper()] + [_kv(k, v) for k, v in zip(keys[1:], panel[1:]) if algo in ONLY_FOR.get(k, (algo,))]
        )
        ax.set_title(f"{title}: η* ∝ width^k")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_ylabel("η* (mean over seeds)")
        if has_max:
            mx = axes[r][1]
            mx.set_yscale("log", base=2)
            mx.set_title(f"{title}: η_max")
            mx.set_ylabel("η_max (stability edge)")
            if not np.isfinite(result.per_width[in_panel].lr_max.astype(float)).any():
                mx.text(0.5, 0.5, "nothing diverged", ha="center", va="center", transform=mx.transAxes)
    for ax in axes[-1]:
        ax.set_xlabel("width")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if guides:
        entries += [
            (Line2D([], [], color="0.6", lw=0.8), "k = 0"),
            (Line2D([], [], color="0.6", lw=0.8, ls="-."), "k = −1"),
        ]
    if seeds_any:
        entries.append((Patch(color="0.5", alpha=0.25, lw=0), f"band: {level_pct(result.level)} t interval over seeds"))
    if limited_any:
        entries.append((Line2D([], [], marker="o", ls="", ms=7, mfc="none", mec="red", mew=1.0), "η* edge-limited"))
    fig.legend(
        [h for h, _ in entries],
        [lab for _, lab in entries],
        loc="outside lower center",
        ncol=1,
        frameon=False,
        handletextpad=0.5,
    )
    return _save(fig, path, dpi, formats)


def level_pct(level: float) -> str:
    """``95%``, ``98.3%``."""
    return f"{100 * float(level):.3g}%"


def _k_text(g) -> str:
    """``k=+0.12 [−0.05, +0.30]``; one seed, or an interval of zero width, says so instead of [k, k]."""
    k = f"k={g.drift_exponent:+.2f}"
    if not (np.isfinite(g.drift_lo) and np.isfinite(g.drift_hi)):
        return f"{k} (no interval)"
    if g.drift_hi - g.drift_lo < 5e-3:
        return f"{k} ({'1 seed, ' if int(g.n_seeds) == 1 else ''}points on a line: no spread)"
    return f"{k} [{g.drift_lo:+.2f}, {g.drift_hi:+.2f}]" + (" (1 seed, least squares)" if int(g.n_seeds) == 1 else "")


def _reference_slopes(ax, pw: pd.DataFrame) -> bool:
    """Grey guides through the base width's η*: k = 0 (μP's prediction) and k = −1 (SP with SGD);
    False when there is no η* to draw them through."""
    pw = pw[np.isfinite(pw.lr_star)]
    if pw.empty:
        return False
    w0 = float(pw.width.min())
    y0 = float(np.exp(np.log(pw[pw.width == w0].lr_star).mean()))
    w = np.array([w0, float(pw.width.max())])
    ax.plot(w, [y0, y0], color="0.6", lw=0.8, ls="-", zorder=0, label="k = 0")
    ax.plot(w, y0 * w0 / w, color="0.6", lw=0.8, ls="-.", zorder=0, label="k = −1")
    return True


def nearest_grid_lr(trials: pd.DataFrame, lr_star: float) -> float | None:
    """The learning rate measured at every width of ``trials`` (one group) nearest ``lr_star`` in
    log2 (the learning curves' η); among all measured ones when no rate is common to every width."""
    if trials.empty or not np.isfinite(lr_star):
        return None
    x0 = np.log2(lr_star)
    per_width = [set(np.round(t.log2_lr.to_numpy(), 6)) for _, t in trials.groupby("width")]
    common = set.intersection(*per_width) if per_width else set()
    cand = np.array(sorted(common or set(np.round(trials.log2_lr.to_numpy(), 6))))
    return float(2 ** cand[int(np.argmin(np.abs(cand - x0)))])


@styled
def plot_learning_curves(
    result: TransferResult,
    history: pd.DataFrame,
    path: str | Path,
    column: str = "train_loss",
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
) -> Path | None:
    """Learning curves at the grid learning rate nearest the base width's η* (:func:`nearest_grid_lr`,
    the same η at every width; the panel's title gives it and the base η*), one curve per width (mean
    over seeds), one legend for the figure.

    Args:
        result: the analysis.
        history: history.parquet's table.
        path: the PNG to write.
        column: the history column to draw.

    Returns:
        The PNG's path, or None when there is no history.
    """
    if history is None or history.empty or column not in history.columns:
        return None
    widths = sorted(result.curves.width.unique())
    _, _, ncols, _ = _facets(result)
    lcol = min(len(widths), 5 if ncols <= 2 else 10)
    fig, axes, cells, row_keys = _grid(result, _legend_height(len(widths), lcol, title_lines=1) + 0.1)
    colors = _colors(widths)
    table = result.table
    for (i, j), (row, par) in cells.items():
        ax = axes[i][j]
        grp = _select(result.groups, row_keys, row, par)
        t = _select(table, row_keys, row, par)
        base = float(grp.lr_star_base.iloc[0]) if not grp.empty else np.nan
        eta = nearest_grid_lr(t, base)
        if eta is None:
            ax.set_title(_title(row_keys, row, par) + " (no η*)")
            continue
        diverged = []
        for w, tw in t.groupby("width"):
            ids = tw[np.isclose(tw.log2_lr, np.log2(eta), atol=1e-6)].trial_id
            h = history[history.trial_id.isin(ids)]
            if h.empty:
                continue
            curve = h.groupby("epoch")[column].mean()
            if not np.isfinite(curve).all():
                diverged.append(str(w))
            ax.plot(curve.index, curve.where(np.isfinite(curve)), marker="o", ms=2.5, color=colors[w], label=f"{w}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(0.7, float(history.epoch.max()) + 0.3)  # whole epochs, also when one point is left
        gone = f"\ndiverged: width {', '.join(diverged)}" if diverged else ""
        ax.set_title(f"{_title(row_keys, row, par)}: η={eta:.3g}\n(nearest base η* {base:.3g}){gone}")
    _edge_labels(fig, axes, cells, "epoch", f"{metric_label(column)} (mean over seeds)")
    handles, labels = next(((h, lab) for h, lab in (a.get_legend_handles_labels() for a in axes.flat) if h), ([], []))
    if handles:
        fig.legend(
            handles, labels, title="width", loc="outside lower center", ncol=lcol, frameon=False, columnspacing=1.0
        )
    return _save(fig, path, dpi, formats)
