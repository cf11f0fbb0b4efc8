"""The transfer report: report.md and report.html with the plots and tables, summary.parquet,
summary.json, and η* over training time (k_over_time.png, k_over_time.parquet) when the history has
several epochs (docs/ARCHITECTURE.md, "The results contract"); `orchestrator.stores.tracking.log_report`
logs it to the sweep's MLflow run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .io import current_umask, write_parquet_atomic
from .load import SweepLogs
from .over_time import k_over_time
from .over_time_plots import plot_k_over_time
from .plots import DPI, FORMATS, group_label, plot_learning_curves, plot_loss_vs_lr, plot_lr_star_vs_width
from .report_setup import INF_TEXT, advice, blank_inapplicable, conclusions, has_inf, setup_table, three_figures
from .schema import EPOCH_METRICS
from .transfer import TransferResult

SUMMARY_COLUMNS = (
    "lr_star",
    "lr_star_lo",
    "lr_star_hi",
    "best_loss",
    "regret",
    "regret_lo",
    "regret_hi",
    "excess_regret",
    "excess_lo",
    "excess_hi",
    "n_censored",
    "n_diverged_at_base",
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
    "base_regret",
    "edge_exponent",
    "edge_limited_widths",
    "censored_widths",
    "level",
    "verdict",
    "own_verdict",
)
# The held-out verdict's group columns (from analysis.transfer.analyze_logs), when there is one.
HELD_OUT_FIELDS = ("held_out_metric", "held_out_verdict", "held_out_k", "held_out_k_lo", "held_out_k_hi")
# Columns of the per-width table in report.md (summary.parquet has them all): the summary's but the raw
# regret's interval, then the diagnostics.
REPORT_WIDTH_COLUMNS = (
    *(c for c in SUMMARY_COLUMNS if c not in ("regret_lo", "regret_hi")),
    *("spacing", "n_seeds", "n_lr", "n_diverged", "refined", "at_edge"),
)


def summary_table(result: TransferResult) -> pd.DataFrame:
    """summary.parquet: one row per (group keys, width) with ``lr_star, lr_star_lo, lr_star_hi,
    best_loss`` (in the metric's own units), ``regret``, ``excess_regret`` (over the base width's) with
    their intervals, ``n_censored, n_diverged_at_base`` (seeds whose base η* is censored or diverged),
    ``lr_max, edge_limited`` and diagnostics."""
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
    varying keys]) with ``drift_exponent, drift_lo, drift_hi, max_regret, regret_lo, regret_hi`` (the
    largest excess regret and its interval), ``base_regret`` (the noise floor), ``edge_exponent, edge_lo,
    edge_hi, edge_limited_widths, censored_widths, level, verdict, own_verdict, control_verdict``, the
    ``held_out_*`` verdict when there is one, and more; ``per_width``: η*, η_max, regret and excess
    regret with intervals, ``n_censored`` and ``edge_limited`` at each width; ``level`` and
    ``held_out`` (the held-out metric and mode, or null).

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
        "level": result.level,
        "held_out": (
            {"metric": result.held_out.metric, "mode": result.held_out.mode} if result.held_out is not None else None
        ),
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
        return f"{v:.3g}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def inline_html(text: str) -> str:
    """``text`` escaped for HTML, its `code` spans (Markdown backticks) as <code> elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{inline_html(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{inline_html(_fmt(v))}</td>" for v in row) + "</tr>"
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
            ht.append(f"<{kind}>{inline_html(rest[0])}</{kind}>")
        elif kind == "p":
            md.append(rest[0])
            ht.append(f"<p>{inline_html(rest[0])}</p>")
        elif kind == "ul":
            md.append("\n".join(f"- {x}" for x in rest[0]))
            ht.append("<ul>" + "".join(f"<li>{inline_html(x)}</li>" for x in rest[0]) + "</ul>")
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
        "img{max-width:100%}code{background:#f3f3f3;padding:0 2px}"
    )
    title = html.escape(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "report"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(ht) + "\n</body></html>\n"
    )
    return "\n\n".join(md) + "\n", page


def level_text(level: float) -> str:
    """A confidence level as a percentage: ``95%``, ``98.3%``."""
    return f"{100 * float(level):.3g}%"


def metric_text(metric: str) -> str:
    """``final_test_loss`` as ``test loss``."""
    return metric.removeprefix("final_").replace("_", " ")


def _group_name(row, keys: list[str]) -> str:
    return group_label(row, keys)


def _has_held_out(result: TransferResult) -> bool:
    return result.held_out is not None and "held_out_verdict" in result.groups.columns


def verdict_table(result: TransferResult) -> pd.DataFrame:
    """The verdict per group, for printing and for the report: k and the largest excess regret with
    their intervals at ``result.level``, the base width's own regret (the noise floor), and the
    held-out metric's verdict and k when there is one (before the verdict, which stays last)."""
    g = result.groups
    lv = level_text(result.level)
    out = g[result.keys].copy()
    out["base η*"] = [_fmt(v) for v in g.lr_star_base]
    out["drift k"] = [_fmt(v) for v in g.drift_exponent]
    out[f"k [{lv} interval]"] = [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(g.drift_lo, g.drift_hi)]
    out[f"excess regret [{lv}]"] = [
        f"{_pct(r)} [{_pct(a)}, {_pct(b)}]" for r, a, b in zip(g.max_regret, g.regret_lo, g.regret_hi)
    ]
    out["base regret"] = [_pct(v) for v in g.base_regret] if "base_regret" in g else "–"
    out["k_edge"] = [_fmt(v) for v in g.edge_exponent]
    out["edge-limited at"] = [v or "-" for v in g.edge_limited_widths]
    out["seeds"] = g.n_seeds
    if _has_held_out(result):
        out[f"held-out ({metric_text(result.held_out.metric)})"] = [
            "–" if not isinstance(v, str) else f"{v}, k {_fmt(k)} [{_fmt(a)}, {_fmt(b)}]"
            for v, k, a, b in zip(g.held_out_verdict, g.held_out_k, g.held_out_k_lo, g.held_out_k_hi)
        ]
    out["verdict"] = g.verdict
    return blank_inapplicable(out)


def held_out_disagreements(result: TransferResult) -> list[str]:
    """``PC μP T=10: transfers on final_train_loss, inconclusive on final_test_loss`` for each group whose
    held-out verdict differs from the objective's (none without a held-out analysis)."""
    if not _has_held_out(result):
        return []
    return [
        f"{_group_name(row, result.keys)}: {row['verdict']} on {result.metric}, "
        f"{row['held_out_verdict']} on {result.held_out.metric}"
        for _, row in result.groups.iterrows()
        if isinstance(row["held_out_verdict"], str) and row["held_out_verdict"] != row["verdict"]
    ]


def held_out_line(result: TransferResult) -> str | None:
    """One sentence naming the groups whose held-out verdict differs from the objective's, or None."""
    diff = held_out_disagreements(result)
    if not diff:
        return None
    return f"The held-out metric ({result.held_out.metric}) disagrees with the objective for: " + "; ".join(diff) + "."


def _pct(v) -> str:
    return (f"{100 * v:.3g}%" if np.isfinite(v) else _fmt(v)) if v is not None else "–"


def rule_text(result: TransferResult) -> str:
    """The verdict's rule, the intervals and their level, in words (the report's explanation)."""
    lv, d, r = level_text(result.level), f"{result.max_drift:g}", f"{result.max_regret:.0%}"
    text = (
        f"Verdict `transfers` when the drift exponent k's {lv} interval lies within ±{d}, the largest excess "
        f"regret's upper bound is ≤ {r} and no width's η* is edge-limited; `drifts` when k's interval lies "
        f"outside ±{d} or the largest excess regret's lower bound (simultaneous over the widths) is > {r}; "
        "otherwise `inconclusive` (an interval straddles a threshold or cannot be computed, the base η* is "
        "censored at some width, or η* is edge-limited). A μP group `transfers` only if its SP control "
        "`drifts` in the same sweep (otherwise the setup cannot tell transfer from drift). "
        "k: the mean over seeds of each seed's least-squares slope of its optimum log2 η* against log2 width, "
        "with its Student's t interval over seeds (one seed: least squares); η* at each width: the mean "
        "over seeds with its t interval. Regret: each seed's loss at the base η* (the mean of the other seeds' "
        "base-width optima: leave one seed out) relative to its best loss, measured at every width, the base "
        "width included; the base width's own regret (base regret) is the noise floor, and the verdict uses "
        "the excess regret over it (paired by seed), whose interval is a jackknife over seeds that carries the "
        "base η*'s own error. Censored: the base η* lies between a seed's last stable and first diverged "
        "learning rate, so its loss there is unknown (the group cannot `transfer`; k alone can still show that it `drifts`). "
        "Edge-limited: the next larger learning rate diverged at most seeds, so η* marks the stability edge "
        "rather than the bottom of the loss; an edge-limited group never `transfers`. k_edge: the exponent of "
        "the stability edge η_max (the largest learning rate that did not diverge)."
    )
    if result.held_out is not None:
        text += (
            f" Held-out: the same analysis and verdict on {result.held_out.metric} ({result.held_out.mode}), "
            "with its own η*, a check that the verdict does not hang on the objective."
        )
    looks = round((1.0 - 0.95) / (1.0 - result.level)) if result.level < 1 else 1
    if looks > 1:
        text += (
            f" Every interval is at {lv}, not 95%: an adaptive verify looks at the data up to {looks} times "
            "(adding seeds to the groups still undecided), and each look uses 1 − 0.05/looks (Bonferroni over "
            "the looks), so that all looks together err at most 5% of the time."
        )
    else:
        text += (
            f" Every interval is at {lv} (one look; an adaptive verify's looks use 1 − 0.05/looks each, "
            "Bonferroni over the looks)."
        )
    return text


def over_time_table(
    result: TransferResult, logs: SweepLogs | None, sweep_cfg: Mapping | None = None
) -> tuple[pd.DataFrame | None, str | None]:
    """:func:`analysis.over_time.k_over_time` of the analysed metric when the history has two epochs or
    more, else None; and a note when it cannot be computed (a metric without per-epoch history)."""
    h = logs.history if logs is not None else None
    if h is None or h.empty or "epoch" not in h.columns or h.epoch.dropna().nunique() < 2:
        return None, None
    if result.metric.removeprefix("final_") not in EPOCH_METRICS:
        return None, f"η* over training time left out: {result.metric} has no per-epoch history"
    table = k_over_time(
        logs.trials,
        h,
        metric=result.metric,
        mode=result.mode,
        max_drift=result.max_drift,
        max_regret=result.max_regret,
        level=result.level,
        sweep_yaml_cfg=sweep_cfg,
    )
    return (table if not table.empty else None), None


def _over_time_rows(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """The report's compact view: group × epoch, sgd_steps, k [interval], verdict."""
    keys = list(table.attrs.get("keys") or [])
    out = table[[*keys, "epoch", "sgd_steps"]].copy()
    out[f"k [{level_text(level)} interval]"] = [
        f"{_fmt(k)} [{_fmt(a)}, {_fmt(b)}]" for k, a, b in zip(table.drift_exponent, table.drift_lo, table.drift_hi)
    ]
    out["verdict"] = table.verdict
    return blank_inapplicable(out)


# A figure maker for the report: called with the report's directory, it writes its PNGs there and
# returns ``(file name, heading, caption)`` for each (e.g. tune-base's Optuna plots, orchestrator/studies/base_plots.py).
FigureMaker = Callable[[Path], list[tuple[str, str, str]]]


def _blocks(
    result: TransferResult,
    logs: SweepLogs | None,
    pngs: dict,
    extra: list[tuple[str, str, str]] = (),
    formats: tuple[str, ...] = (),
    over_time: pd.DataFrame | None = None,
    extra_notes: list[str] = (),
    sweep_cfg: Mapping | None = None,
) -> list[tuple]:
    t = result.table
    counts = t.status.value_counts().to_dict()
    name = logs.name if logs else "sweep"
    lv = level_text(result.level)
    blocks: list[tuple] = [
        ("h1", f"Learning-rate transfer: {name}"),
        (
            "p",
            f"Source: {logs.source if logs else 'in memory'}. Objective: {result.mode} {result.metric} "
            f"(diverged trials count as +inf loss). {len(t)} trials: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + ".",
        ),
    ]
    overall, per_group = conclusions(result)
    blocks += [("p", overall), ("ul", per_group)]
    trials = logs.trials if logs is not None else t
    blocks += [
        ("h2", "Setup"),
        (
            "p",
            "What was trained, from the sweep's recorded config (sweep.yaml) and its trials table; every "
            "trial of a group differs from the others only in width, learning rate and seed.",
        ),
        ("table", setup_table(result, trials, sweep_cfg, logs.history if logs is not None else None)),
        ("h2", "Verdicts"),
        ("p", rule_text(result)),
    ]
    verdicts = verdict_table(result)
    blocks.append(("table", verdicts))
    disagree = held_out_line(result)
    if disagree:
        blocks.append(("p", disagree))
    reasons = blank_inapplicable(result.groups[[*result.keys, "verdict_reason"]])
    reasons["verdict_reason"] = [three_figures(r) for r in reasons.verdict_reason]
    blocks.append(("table", reasons))
    if has_inf(verdicts, result.per_width[["regret", "excess_regret"]]):
        blocks.append(("p", INF_TEXT))
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
                f"η*(width) with its {lv} t interval over seeds; k is the mean over seeds of each seed's slope of log2 η* against "
                "log2 width (μP: near 0; SP with SGD: about −1).",
            ),
            ("img", pngs["lr_star"].name, "optimal learning rate against width"),
        ]
    if over_time is not None:
        steps = "SGD steps" if np.isfinite(over_time.sgd_steps.astype(float)).any() else "epochs (SGD steps unknown)"
        blocks += [
            ("h2", "η* over training time"),
            (
                "p",
                f"The same analysis of {result.metric} at every recorded epoch (each trial's history read as if "
                f"it had stopped there; a trial that diverged by then counts as diverged), k against {steps}: "
                f"band: k's {lv} interval; marker face: the verdict at that epoch; grey: |k| ≤ "
                f"{result.max_drift:g}. sgd_steps: the median over the group's trials still running (from the "
                "sweep's config where the history did not count them). The table is also k_over_time.parquet.",
            ),
        ]
        if "k_over_time" in pngs:
            blocks.append(("img", pngs["k_over_time"].name, "drift exponent k against SGD steps"))
        blocks.append(("table", _over_time_rows(over_time, result.level)))
    cols = [*result.keys, "width", *REPORT_WIDTH_COLUMNS]
    blocks += [
        ("h2", "Per width"),
        (
            "p",
            "η* = 2^(mean over seeds of each seed's optimum in log2 η); best_loss = mean over seeds of "
            "the lowest loss measured; regret = mean over seeds of (loss at the leave-one-seed-out base η* − "
            "best_loss) / |best_loss|, floored at 0, measured at the base width too (there: the noise floor); "
            "excess_regret = mean over seeds of (regret − the same seed's regret at the base width), with its "
            f"{lv} jackknife interval [excess_lo, excess_hi]; n_censored = seeds whose base η* lies between "
            "their last stable and first diverged learning rate (loss unknown there); n_diverged_at_base = "
            "seeds that diverged at the base η*; lr_max = the stability edge (largest learning rate "
            "that did not diverge, – when nothing diverged); edge_limited = the next larger learning rate "
            "diverged at most seeds; spacing = log2 distance from the best point to its nearest "
            "neighbour (the resolution of η*); refined = quadratic fit used at every seed; at_edge = best "
            "point at an end of the learning rates tried (η* censored). summary.parquet has these and "
            "regret's own interval (regret_lo, regret_hi).",
        ),
        ("table", blank_inapplicable(summary_table(result)[cols])),
    ]
    if "curves" in pngs:
        blocks += [
            ("h2", "Learning curves near the base width's η*"),
            (
                "p",
                "Training loss per epoch (mean over seeds), one curve per width, at the learning rate measured at "
                "every width that lies nearest the base width's η* (η* itself is a fit between measured rates, so "
                "no trial ran at it); each panel's title gives that rate and the base η*.",
            ),
            ("img", pngs["curves"].name, "learning curves at the learning rate nearest the base width's η*"),
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
    notes = result.notes + (logs.notes if logs else []) + list(extra_notes)
    if notes:
        blocks += [("h2", "Notes"), ("ul", [advice(n) for n in notes])]
    return blocks


def write_report(
    result: TransferResult,
    out_dir: str | Path,
    logs: SweepLogs | None = None,
    dpi: int = DPI,
    formats: tuple[str, ...] = FORMATS,
    figures: FigureMaker | None = None,
    sweep_cfg: Mapping | None = None,
) -> Path:
    """Write ``out_dir``: report.md, report.html, loss_vs_lr.png, lr_star_vs_width.png,
    learning_curves.png (when there is history), summary.parquet, summary.json, and, when the
    history has two epochs or more, k_over_time.png and k_over_time.parquet (η* and k at every
    epoch, :func:`analysis.over_time.k_over_time`); each figure also in the other ``formats``
    (``svg``, ``pdf``), PNGs at ``dpi``; ``figures`` adds more (its PNGs). ``sweep_cfg`` (the
    resolved ``sweep.yaml``, :func:`analysis.load.read_sweep_yaml`) gives the SGD steps of history
    recorded without them.

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
        over_time, why = over_time_table(result, logs, sweep_cfg)
        if over_time is not None:
            write_parquet_atomic(pd.DataFrame(over_time), tmp / "k_over_time.parquet")
            png = plot_k_over_time(over_time, tmp / "k_over_time.png", dpi=dpi, formats=formats)
            if png is not None:
                pngs["k_over_time"] = png
        extra = figures(tmp) if figures is not None else []
        write_parquet_atomic(summary_table(result), tmp / "summary.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary_json(result, logs), indent=2, allow_nan=False) + "\n")
        blocks = _blocks(result, logs, pngs, extra, formats, over_time, [why] if why else [], sweep_cfg)
        md, page = render(blocks, tmp)
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
