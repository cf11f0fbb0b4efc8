"""The transfer report: report.md and report.html with the plots and tables, summary.parquet,
summary.json (docs/ARCHITECTURE.md, "The results contract"); `orchestrator.tracking.log_report`
logs it to the sweep's MLflow run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .io import current_umask, write_parquet_atomic
from .load import SweepLogs
from .plots import DPI, FORMATS, plot_learning_curves, plot_loss_vs_lr, plot_lr_star_vs_width
from .transfer import TransferResult

SUMMARY_COLUMNS = (
    "lr_star",
    "lr_star_lo",
    "lr_star_hi",
    "best_loss",
    "regret",
    "regret_lo",
    "regret_hi",
    "lr_max",
    "edge_limited",
)
GROUP_FIELDS = (
    "drift_exponent",
    "drift_lo",
    "drift_hi",
    "max_regret",
    "regret_lo",
    "regret_hi",
    "edge_exponent",
    "edge_limited_widths",
    "verdict",
)


def summary_table(result: TransferResult) -> pd.DataFrame:
    """summary.parquet: one row per (group keys, width) with ``lr_star, lr_star_lo, lr_star_hi,
    best_loss, regret`` (best_loss in the metric's own units) and diagnostics."""
    df = result.per_width.copy()
    if result.mode == "max":
        df["best_loss"] = -df["best_loss"]
    first = [*result.keys, "width", *SUMMARY_COLUMNS]
    return df[first + [c for c in df.columns if c not in first]]


def _json_value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    return v


def summary_json(result: TransferResult, logs: SweepLogs | None = None) -> dict:
    """summary.json: ``groups``, one per (algorithm, parametrization, inference_steps[, other
    varying keys]) with ``drift_exponent, drift_lo, drift_hi, max_regret, regret_lo, regret_hi,
    edge_exponent, edge_lo, edge_hi, edge_limited_widths, verdict, control_verdict`` and more, and
    ``per_width``: η*, η_max, regret with intervals and ``edge_limited`` at each width.

    NaN is written as null and an infinite regret (the base η* diverges at some width) as "inf".
    """
    groups = [{k: _json_value(v) for k, v in row.items()} for row in result.groups.to_dict("records")]
    return {
        "sweep": logs.name if logs else None,
        "source": logs.source if logs else None,
        "metric": result.metric,
        "mode": result.mode,
        "group_keys": result.keys,
        "thresholds": {"max_drift": result.max_drift, "max_regret": result.max_regret},
        "groups": groups,
        "per_width": [{k: _json_value(v) for k, v in row.items()} for row in result.per_width.to_dict("records")],
        "notes": result.notes + (logs.notes if logs else []),
    }


# ---- rendering: one list of blocks, two formats ------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.4g}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(blocks: list[tuple], out_dir: Path) -> tuple[str, str]:
    """Markdown (images by relative path) and HTML (images inlined as data URIs) of the blocks.

    Blocks: ``("h1"|"h2"|"p", text)``, ``("ul", [items])``, ``("table", df)``, ``("img", file, alt)``.
    """
    md, ht = [], []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            md.append(("# " if kind == "h1" else "## ") + rest[0])
            ht.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            md.append(rest[0])
            ht.append(f"<p>{html.escape(rest[0])}</p>")
        elif kind == "ul":
            md.append("\n".join(f"- {x}" for x in rest[0]))
            ht.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rest[0]) + "</ul>")
        elif kind == "table":
            md.append(_md_table(rest[0]))
            ht.append(_html_table(rest[0]))
        elif kind == "img":
            name, alt = rest
            md.append(f"![{alt}]({name})")
            data = base64.b64encode((out_dir / name).read_bytes()).decode()
            ht.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>')
        else:
            raise ValueError(f"block kind {kind!r} is not one of h1, h2, p, ul, table, img")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}"
    )
    title = html.escape(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "report"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(ht) + "\n</body></html>\n"
    )
    return "\n\n".join(md) + "\n", page


def verdict_table(result: TransferResult) -> pd.DataFrame:
    """The verdict per group, for printing and for the report."""
    g = result.groups
    out = g[result.keys].copy()
    out["base η*"] = [_fmt(v) for v in g.lr_star_base]
    out["drift k"] = [_fmt(v) for v in g.drift_exponent]
    out["k 95% interval"] = [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(g.drift_lo, g.drift_hi)]
    out["max regret [95%]"] = [
        f"{_pct(r)} [{_pct(a)}, {_pct(b)}]" for r, a, b in zip(g.max_regret, g.regret_lo, g.regret_hi)
    ]
    out["k_edge"] = [_fmt(v) for v in g.edge_exponent]
    out["edge-limited at"] = [v or "-" for v in g.edge_limited_widths]
    out["seeds"] = g.n_seeds
    out["verdict"] = g.verdict
    return out


def _pct(v) -> str:
    return (f"{100 * v:.3g}%" if np.isfinite(v) else _fmt(v)) if v is not None else "–"


# A figure maker for the report: called with the report's directory, it writes its PNGs there and
# returns ``(file name, heading, caption)`` for each (e.g. tune-base's Optuna plots, orchestrator/base_plots.py).
FigureMaker = Callable[[Path], list[tuple[str, str, str]]]


def _blocks(
    result: TransferResult,
    logs: SweepLogs | None,
    pngs: dict,
    extra: list[tuple[str, str, str]] = (),
    formats: tuple[str, ...] = (),
) -> list[tuple]:
    t = result.table
    counts = t.status.value_counts().to_dict()
    name = logs.name if logs else "sweep"
    blocks: list[tuple] = [
        ("h1", f"Learning-rate transfer: {name}"),
        (
            "p",
            f"Source: {logs.source if logs else 'in memory'}. Objective: {result.mode} {result.metric} "
            f"(diverged trials count as +inf loss). {len(t)} trials: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + ".",
        ),
        (
            "p",
            f"Verdict `transfers` when the drift exponent k's 95 % interval lies within ±{result.max_drift:g} "
            f"and the max regret's upper bound is ≤ {result.max_regret:.0%}; `drifts` when k's interval lies "
            f"outside ±{result.max_drift:g} or the regret's lower bound is > {result.max_regret:.0%}; otherwise "
            "`inconclusive`. A μP group `transfers` only if its SP control `drifts` in the same sweep "
            "(otherwise the setup cannot tell transfer from drift). Intervals: bootstrap over seeds at each "
            "width (one seed: least-squares). k_edge: the exponent of the stability edge η_max (the largest "
            "learning rate that did not diverge); edge-limited: widths where the next larger learning rate "
            "diverged, so η* marks the edge rather than the bottom of the loss.",
        ),
        ("h2", "Verdicts"),
        ("table", verdict_table(result)),
        ("table", result.groups[[*result.keys, "verdict_reason"]]),
    ]
    if "loss" in pngs:
        blocks += [
            ("h2", "Loss against learning rate"),
            (
                "p",
                "Mean over seeds, one curve per width; ★ marks η* (quadratic fit of the loss against "
                "log2 η around the best grid point), × a diverged learning rate.",
            ),
            ("img", pngs["loss"].name, "loss against learning rate, one curve per width"),
        ]
    if "lr_star" in pngs:
        blocks += [
            ("h2", "Optimal learning rate against width"),
            (
                "p",
                "η*(width) with its seed-bootstrap 95 % interval; k is the slope of log2 η* against "
                "log2 width (μP: near 0; SP with SGD: about −1).",
            ),
            ("img", pngs["lr_star"].name, "optimal learning rate against width"),
        ]
    cols = [*result.keys, "width", *SUMMARY_COLUMNS, "spacing", "n_seeds", "n_lr", "n_diverged", "refined", "at_edge"]
    blocks += [
        ("h2", "Per width"),
        (
            "p",
            "η* = 2^(mean over seeds of each seed's optimum in log2 η); best_loss = mean over seeds of "
            "the lowest loss measured; regret = mean over seeds of (loss at the base width's η* − "
            "best_loss) / |best_loss|, floored at 0; lr_max = the stability edge (largest learning rate "
            "that did not diverge, – when nothing diverged); edge_limited = the next larger learning rate "
            "diverged at most seeds; spacing = log2 distance from the best point to its nearest "
            "neighbour (the resolution of η*); refined = quadratic fit used at every seed; at_edge = best "
            "point at an end of the learning rates tried (η* censored).",
        ),
        ("table", summary_table(result)[cols]),
    ]
    if "curves" in pngs:
        blocks += [
            ("h2", "Learning curves at the base width's η*"),
            ("img", pngs["curves"].name, "learning curves at the base width's optimal learning rate"),
        ]
    for name, heading, caption in extra:
        blocks += [("h2", heading), ("p", caption), ("img", name, heading)]
    vector = [f for f in formats if f != "png"]
    if vector:
        blocks += [
            (
                "p",
                f"Each figure is also written as {' and '.join(f.upper() for f in vector)} beside its PNG "
                f"(same name), for print.",
            )
        ]
    notes = result.notes + (logs.notes if logs else [])
    if notes:
        blocks += [("h2", "Notes"), ("ul", notes)]
    return blocks


def write_report(
    result: TransferResult,
    out_dir: str | Path,
    logs: SweepLogs | None = None,
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
    figures: FigureMaker | None = None,
) -> Path:
    """Write ``out_dir``: report.md, report.html, loss_vs_lr.png, lr_star_vs_width.png,
    learning_curves.png (when there is history), summary.parquet, summary.json; each figure also
    in the other ``formats`` (``svg``, ``pdf``), PNGs at ``dpi``; ``figures`` adds more (its PNGs).

    The files are written to a temporary directory beside ``out_dir`` that then replaces it,
    so a crash leaves the previous report whole.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pngs = {
            "loss": plot_loss_vs_lr(result, tmp / "loss_vs_lr.png", dpi, formats),
            "lr_star": plot_lr_star_vs_width(result, tmp / "lr_star_vs_width.png", dpi, formats),
        }
        curves = plot_learning_curves(
            result, logs.history if logs else None, tmp / "learning_curves.png", dpi=dpi, formats=formats
        )
        if curves is not None:
            pngs["curves"] = curves
        extra = figures(tmp) if figures is not None else []
        write_parquet_atomic(summary_table(result), tmp / "summary.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary_json(result, logs), indent=2, allow_nan=False) + "\n")
        md, page = render(_blocks(result, logs, pngs, extra, formats), tmp)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(page)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
        umask = current_umask()
        tmp.chmod(0o777 & ~umask)  # mkdtemp/mkstemp make 0700/0600: give the usual modes
        for f in tmp.iterdir():
            f.chmod(0o666 & ~umask)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
