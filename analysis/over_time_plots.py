"""The drift exponent k over training time: :func:`analysis.over_time.k_over_time`'s table as a figure.

One panel per algorithm (and per further key that varies, e.g. PC's T); in each, k against SGD steps
(log axis), SP and μP in two colours, the interval at the analysis' level as a band, the marker's face
the verdict at that epoch, the ±max_drift band where k counts as transferring shaded grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .plots import COLUMN_IN, DPI, FORMATS, MIN_PT, ONLY_FOR, PAR_LABEL, PAR_ORDER, _kv, _natural, _save, plt, styled

PAR_STYLE = {"sp": ("tab:orange", "s"), "mup": ("tab:blue", "o")}  # colour, marker
VERDICT_FACE = {"transfers": "tab:green", "drifts": "tab:red"}  # anything else (inconclusive): hollow
WIDTH_IN = COLUMN_IN  # inches: one column of a page, texts at 7 pt (analysis.plots.STYLE)


def _panels(table: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[tuple]]:
    """Panel keys (every key but the parametrization) and their values, algorithm first."""
    pk = [k for k in keys if k != "parametrization"]
    pk = sorted(pk, key=lambda k: k != "algorithm")
    vals = sorted({tuple(r) for r in table[pk].astype(str).itertuples(index=False)}, key=_natural) if pk else [()]
    return pk, vals


# How a panel title names a key's value, where the key=value form says less (analysis.crossed's keys).
VALUE_LABEL = {
    ("sequential_inference", "True"): "single shot",
    ("sequential_inference", "False"): "parallel",
    ("loss", "ce"): "CE",
    ("loss", "mse"): "MSE",
}
PANEL_CHARS = 15  # characters of a title's line in a panel a third of a column wide (7 pt)


def _number(text: str) -> str:
    """``-1.0`` as ``−1``, ``6`` as ``6``; text that is not a number as it is."""
    try:
        return f"{float(text):g}".replace("-", "−")
    except ValueError:
        return text


def _panel_title(pk: list[str], panel: tuple) -> str:
    """``BP MSE`` or, wrapped to :data:`PANEL_CHARS`, ``PC MSE T=6`` / ``parallel γ̄_L=−1``: the algorithm,
    then the keys that apply to it (a key a study lacks, ``-``, is left out; T under the single-shot schedule,
    which does not read it, too)."""
    given = dict(zip(pk, (str(v) for v in panel)))
    algo = given.get("algorithm")
    parts = []
    for k, v in given.items():
        if v == "-" or (k == "inference_steps" and given.get("sequential_inference") == "True"):
            continue
        if k == "algorithm":
            parts.append(v.upper())
        elif algo is None or algo in ONLY_FOR.get(k, (algo,)):
            parts.append(VALUE_LABEL.get((k, v)) or _kv(k, _number(v)))
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + 1 + len(part) > PANEL_CHARS:
            lines.append("")
        lines[-1] = f"{lines[-1]} {part}".strip()
    return "\n".join(lines) if parts else "all trials"


def _style(par: str, i: int) -> tuple[str, str]:
    return PAR_STYLE.get(par, (f"C{(i + 2) % 10}", "D"))


def _log_steps_axis(ax, steps: pd.Series) -> None:
    """Log x axis of step counts, labelled 20, 300, 4000 (not 2×10¹), at 1-2-3-5 multiples of the
    decades over a short span, fewer over a long one."""
    ax.set_xscale("log")
    finite = steps[np.isfinite(steps) & (steps > 0)]
    decades = float(np.log10(finite.max() / finite.min())) if len(finite) else 0.0
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1 else (1.0, 3.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


@styled
def plot_k_over_time(
    table: pd.DataFrame,
    path: str | Path,
    max_drift: float | None = None,
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
) -> Path | None:
    """k (with its interval) against SGD steps, one panel per algorithm, SP beside μP.

    Args:
        table: :func:`analysis.over_time.k_over_time`'s table (its ``attrs`` give the keys, the
            level, the objective and, unless ``max_drift`` is given, the band's half-width).
        path: the PNG to write (and beside it, per ``formats``, SVG or PDF).
        max_drift: half-width of the shaded band (default ``table.attrs["max_drift"]``).

    Returns:
        The PNG's path, or None when the table is empty.
    """
    if table is None or table.empty:
        return None
    keys = list(table.attrs.get("keys") or [c for c in ("algorithm", "parametrization") if c in table])
    max_drift = float(table.attrs.get("max_drift", 0.2) if max_drift is None else max_drift)
    level = float(table.attrs.get("level", 0.95))
    x_col = "sgd_steps" if np.isfinite(table.sgd_steps.astype(float)).any() else "epoch"
    pk, panels = _panels(table, keys)
    n = len(panels)
    varying = [len(v) for v in (set(col) for col in zip(*panels)) if len(v) > 1] if pk else []
    last = varying[-1] if varying else 1  # values of the fastest-varying panel key that varies
    # a row of up to three panels sharing k's axis; a crossed design (e.g. algorithm x loss) as its grid
    ncols = last if 1 < last <= 3 and n % last == 0 and n > last else min(n, 3)
    nrows = -(-n // ncols)
    title_lines = max(_panel_title(pk, p).count("\n") + 1 for p in panels)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(
            WIDTH_IN,
            max(WIDTH_IN / 1.6, (1.3 + 0.12 * title_lines) * nrows + 0.8),
        ),  # a page's aspect where it fits
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    t = table.astype({k: str for k in keys})
    pars = sorted(
        t.parametrization.unique() if "parametrization" in t else ["-"],
        key=lambda p: (PAR_ORDER.index(p) if p in PAR_ORDER else len(PAR_ORDER), p),
    )
    ks = []  # every panel's point estimates: the panels share k's axis
    for ax, panel in zip(axes.flat, panels):
        sel = t[(t[pk] == pd.Series(panel, index=pk)).all(axis=1)] if pk else t
        ax.axhspan(-max_drift, max_drift, color="0.85", lw=0, zorder=0)
        ax.axhline(0.0, color="0.5", lw=0.8, zorder=1)
        for i, par in enumerate(pars):
            d = sel[sel.parametrization == par] if "parametrization" in sel else sel
            if d.empty:
                continue
            d = d.sort_values(x_col)
            x, k = d[x_col].astype(float), d.drift_exponent.astype(float)
            color, marker = _style(par, i)
            ax.plot(x, k, "-", color=color, lw=1.0, zorder=3)
            band = np.isfinite(d.drift_lo.astype(float)) & np.isfinite(d.drift_hi.astype(float))
            ax.fill_between(x[band], d.drift_lo[band], d.drift_hi[band], color=color, alpha=0.18, lw=0, zorder=2)
            for v, dv in d.groupby("verdict"):
                face = VERDICT_FACE.get(str(v), "white")
                ax.plot(dv[x_col], dv.drift_exponent, marker, ms=4, mfc=face, mec=color, mew=1.0, ls="", zorder=4)
            ks += list(k[np.isfinite(k)])
        if x_col == "sgd_steps":
            _log_steps_axis(ax, table.sgd_steps.astype(float))
        ax.set_title(_panel_title(pk, panel))
        ax.grid(True, which="major", color="0.92", lw=0.6)
    if ks:  # the point estimates and the band, not a wide interval of one epoch
        lo, hi = min(min(ks), -max_drift), max(max(ks), max_drift)
        pad = 0.25 * max(hi - lo, 0.5)
        axes.flat[0].set_ylim(lo - pad, hi + pad)
    for i, j in np.ndindex(axes.shape):  # the lowest panel of each column carries the x axis
        if axes[i, j].get_visible() and (i + 1 == nrows or not axes[i + 1, j].get_visible()):
            axes[i, j].xaxis.set_tick_params(which="both", labelbottom=True)
            axes[i, j].set_xlabel("SGD steps (log)" if x_col == "sgd_steps" else "epoch (SGD steps unknown)")
    for row in axes:
        row[0].set_ylabel("drift exponent k")
    for ax in axes.flat:
        ax.xaxis.set_tick_params(which="both", labelsize=MIN_PT)
    handles = [Line2D([], [], color=_style(p, i)[0], marker=_style(p, i)[1], lw=1.0) for i, p in enumerate(pars)]
    labels = [PAR_LABEL.get(p, p) for p in pars]
    handles += [
        Line2D([], [], marker="o", ls="", ms=4, mfc=VERDICT_FACE["transfers"], mec="0.3"),
        Line2D([], [], marker="o", ls="", ms=4, mfc=VERDICT_FACE["drifts"], mec="0.3"),
        Line2D([], [], marker="o", ls="", ms=4, mfc="white", mec="0.3"),
        Patch(color="0.85"),
    ]
    labels += ["transfers", "drifts", "inconclusive", f"|k| ≤ {max_drift:g}"]
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=4,
        title=f"η* ∝ width^k at each epoch ({str(table.attrs.get('metric', 'objective')).replace('_', ' ')});\n"
        f"band: {100 * level:.3g}% interval; marker face: the verdict at that epoch",
        frameon=False,
    )
    return _save(fig, path, dpi, formats)
