"""Plots of a transfer analysis: loss against learning rate, η* against width, learning curves.

Facets (loss and learning curves): columns are the parametrizations (SP left, μP right) times the
first further key that varies (e.g. the inference steps T across); rows are the algorithms times
the other varying keys (e.g. γ̄_L × fixed prediction down); one curve per width. A panel is
titled with the keys its group has (BP and TP panels carry no T). Legends lie outside the data.
Every figure is written as PNG (``dpi``, default :data:`DPI`) and, per ``formats``, as SVG or PDF.
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


def _grid(result: TransferResult):
    """A figure with one panel per group (:func:`_facets`); unused cells are hidden.

    Returns:
        ``(fig, axes, cells, row_keys)``: ``axes[i][j]`` is the panel of ``cells[(i, j)]``.
    """
    cells, nrows, ncols, row_keys = _facets(result)
    panel_w, panel_h = (4.6, 3.4) if ncols <= 2 else (3.6, 2.9)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows), squeeze=False, layout="constrained"
    )
    for (i, j), ax in np.ndenumerate(axes):
        if (i, j) not in cells:
            ax.set_visible(False)
    return fig, axes, cells, row_keys


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
    return f"{head}  {keys}".rstrip() if len(head) + len(keys) <= 24 else f"{head}\n{keys}"


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


def plot_loss_vs_lr(
    result: TransferResult, path: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS
) -> Path:
    """Mean loss over seeds against learning rate, one curve per width, η* marked (★).

    The line joins the learning rates every seed measured; the sub-octave points that only some
    seeds measured (each seed is refined around its own optimum) are dots. Diverged learning
    rates are drawn as × on the top edge of the panel.

    Returns:
        The PNG's path.
    """
    fig, axes, cells, row_keys = _grid(result)
    sign = 1.0 if result.mode == "min" else -1.0
    colors = _colors(result.curves.width.unique())
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
            ax.plot(full.lr, sign * full.loss, marker="o", ms=3, color=colors[w], label=f"{w}")
            _seed_band(ax, seeds[seeds.width == w], sign, colors[w])
            part = c[np.isfinite(c.loss) & ~c.index.isin(full.index)]  # refined: some seeds only
            ax.plot(part.lr, sign * part.loss, ".", ms=3, color=colors[w], alpha=0.5)
            div = c[~np.isfinite(c.loss)]  # one row of × per width along the top edge
            (marks,) = ax.plot(
                div.lr, np.full(len(div), hi + pad * (1 + 0.5 * n)), "x", color=colors[w], ms=5, clip_on=False
            )
            marks.set_in_layout(False)
            p = pw[pw.width == w]
            if len(p) and np.isfinite(p.lr_star.iloc[0]):
                limited = bool(p.edge_limited.iloc[0]) if "edge_limited" in p else False
                ax.plot(
                    p.lr_star,
                    sign * p.best_loss,
                    "*",
                    color=colors[w],
                    ms=11,
                    mec="red" if limited else "k",
                    mew=1.2 if limited else 0.5,
                )
        ax.set_xscale("log", base=2)
        ax.set_ylim(lo - pad, hi + pad * (1.5 + 0.5 * cur.width.nunique()))
        ax.set_xlabel("learning rate η")
        ax.set_ylabel(result.metric)
        ax.set_title(_title(row_keys, row, par), fontsize=10)
    handles, labels = next(((h, lab) for h, lab in (a.get_legend_handles_labels() for a in axes.flat) if h), ([], []))
    if handles:
        fig.legend(
            handles,
            labels,
            title="width (× diverged, ★ η*, red ★: edge-limited, dots: some seeds only, band: range over seeds)",
            loc="outside lower center",
            ncol=len(handles),
            fontsize=8,
            title_fontsize=8,
        )
    return _save(fig, path, dpi, formats)


def _seed_band(ax, trials: pd.DataFrame, sign: float, color) -> None:
    """Shade the range over seeds of the loss at the learning rates every seed measured (the solid line's)."""
    n = trials.seed.nunique()
    t = trials[np.isfinite(trials.loss)]
    spread = t.groupby("lr").loss.agg(["min", "max", "count"])
    spread = spread[spread["count"] == n] if n > 1 else spread.iloc[:0]
    if len(spread) > 1:
        ax.fill_between(spread.index, sign * spread["min"], sign * spread["max"], color=color, alpha=0.15, lw=0)


MAX_LINES = 6  # groups per η* panel before the panels are split by the next key


def _panels(result: TransferResult) -> tuple[list[str], list[tuple]]:
    """Keys and values of the η* panels: per algorithm, split by further keys while a panel has too many lines."""
    keys = ["algorithm"]
    rest = [k for k in result.keys if k not in ("algorithm", "parametrization")]
    g = result.groups.astype({k: str for k in result.keys})
    while rest and g.groupby(keys).size().max() > MAX_LINES:
        keys.append(rest.pop(0))
    return keys, sorted({tuple(r) for r in g[keys].itertuples(index=False)}, key=_natural)


def plot_lr_star_vs_width(
    result: TransferResult, path: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS
) -> Path:
    """η* against width on log2 axes, one line per group (its t interval over seeds at ``result.level``
    as a band where there are seeds), the stability edge η_max dotted in the same colour, edge-limited η* ringed in
    red, k = 0 and k = −1 guides through the base width's η*.

    Returns:
        The PNG's path.
    """
    keys, panels = _panels(result)
    ncols = 2 if len(panels) == 4 else min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.6 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    g_all = result.groups.astype({k: str for k in result.keys})
    pw_all = result.per_width.astype({k: str for k in result.keys})
    for ax, panel in zip(axes.flat, panels):
        algo = panel[0]
        sel = (g_all[keys] == pd.Series(panel, index=keys)).all(axis=1)
        line_keys = [k for k in result.keys if k not in keys and algo in ONLY_FOR.get(k, (algo,))]
        for i, g in result.groups[sel.to_numpy()].iterrows():
            mask = (pw_all[result.keys] == g_all.loc[i, result.keys]).all(axis=1).to_numpy()
            pw = result.per_width[mask].sort_values("width")
            label = " ".join(
                PAR_LABEL.get(str(g[k]), str(g[k])) if k == "parametrization" else _kv(k, g[k]) for k in line_keys
            )
            line = ax.plot(
                pw.width,
                pw.lr_star,
                marker="o",
                ls="--" if str(g.get("parametrization")) == "sp" else "-",
                label=f"{label}: {_k_text(g)} ({g.verdict})",
            )
            if int(g.n_seeds) > 1:
                band = np.isfinite(pw.lr_star_lo) & np.isfinite(pw.lr_star_hi)
                ax.fill_between(
                    pw.width[band],
                    pw.lr_star_lo[band],
                    pw.lr_star_hi[band],
                    color=line[0].get_color(),
                    alpha=0.15,
                    lw=0,
                )
            limited = pw[pw.edge_limited.astype(bool)] if "edge_limited" in pw else pw.iloc[:0]
            ax.plot(limited.width, limited.lr_star, "o", ms=11, mfc="none", mec="red", mew=1.2)
            if "lr_max" in pw and np.isfinite(pw.lr_max).any():
                ax.plot(pw.width, pw.lr_max, "v:", color=line[0].get_color(), ms=5, alpha=0.7)
        _reference_slopes(ax, result.per_width[(pw_all[keys] == pd.Series(panel, index=keys)).all(axis=1).to_numpy()])
        ax.plot([], [], "v:", color="0.4", label="η_max (stability edge), same colour")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_ylabel("η* (mean over seeds)")
        title = " ".join([algo.upper()] + [_kv(k, v) for k, v in zip(keys[1:], panel[1:])])
        seeds = (
            f"band: {100 * result.level:.3g} % t interval over seeds; "
            if (result.groups[sel.to_numpy()].n_seeds > 1).any()
            else ""
        )
        ax.set_title(f"{title}: η* ∝ width^k\n({seeds}red ring: edge-limited)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    return _save(fig, path, dpi, formats)


def _k_text(g) -> str:
    """``k=+0.12 [−0.05, +0.30]``; one seed, or an interval of zero width, says so instead of [k, k]."""
    k = f"k={g.drift_exponent:+.2f}"
    if not (np.isfinite(g.drift_lo) and np.isfinite(g.drift_hi)):
        return f"{k} (no interval)"
    if g.drift_hi - g.drift_lo < 5e-3:
        return f"{k} ({'1 seed, ' if int(g.n_seeds) == 1 else ''}points on a line: no spread)"
    return f"{k} [{g.drift_lo:+.2f}, {g.drift_hi:+.2f}]" + (" (1 seed, least squares)" if int(g.n_seeds) == 1 else "")


def _reference_slopes(ax, pw: pd.DataFrame) -> None:
    """Grey guides through the base width's η*: k = 0 (μP's prediction) and k = −1 (SP with SGD)."""
    pw = pw[np.isfinite(pw.lr_star)]
    if pw.empty:
        return
    w0 = float(pw.width.min())
    y0 = float(np.exp(np.log(pw[pw.width == w0].lr_star).mean()))
    w = np.array([w0, float(pw.width.max())])
    ax.plot(w, [y0, y0], color="0.6", lw=0.8, ls="-", zorder=0, label="k = 0")
    ax.plot(w, y0 * w0 / w, color="0.6", lw=0.8, ls="-.", zorder=0, label="k = −1")


def plot_learning_curves(
    result: TransferResult,
    history: pd.DataFrame,
    path: str | Path,
    column: str = "train_loss",
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
) -> Path | None:
    """Learning curves at the base width's η* (nearest grid learning rate), one curve per width.

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
    fig, axes, cells, row_keys = _grid(result)
    colors = _colors(result.curves.width.unique())
    table = result.table
    for (i, j), (row, par) in cells.items():
        ax = axes[i][j]
        grp = _select(result.groups, row_keys, row, par)
        t = _select(table, row_keys, row, par)
        if grp.empty or not np.isfinite(grp.lr_star_base.iloc[0]):
            ax.set_title(_title(row_keys, row, par) + " (no η*)")
            continue
        x0 = np.log2(grp.lr_star_base.iloc[0])
        for w, tw in t.groupby("width"):
            near = tw.log2_lr.iloc[int(np.argmin(np.abs(tw.log2_lr.to_numpy() - x0)))]
            ids = tw[np.isclose(tw.log2_lr, near)].trial_id
            h = history[history.trial_id.isin(ids)]
            if h.empty:
                continue
            curve = h.groupby("epoch")[column].mean()
            diverged = " diverged" if not np.isfinite(curve).all() else ""
            ax.plot(
                curve.index,
                curve.where(np.isfinite(curve)),
                marker="o",
                ms=3,
                color=colors[w],
                label=f"{w} (η={2**near:.3g}){diverged}",
            )
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(0.7, float(history.epoch.max()) + 0.3)  # whole epochs, also when one point is left
        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
        ax.set_title(
            _title(row_keys, row, par) + (" at base η*" if len(_title(row_keys, row, par)) < 16 else "\nat base η*"),
            fontsize=9,
        )
        ax.legend(
            title="width", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
        )
    return _save(fig, path, dpi, formats)
