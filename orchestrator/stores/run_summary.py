"""What the MLflow runs show, as plain data: run names, the sweep's params, per-group metrics and the
markdown descriptions of the parent runs (no MLflow here; :mod:`orchestrator.stores.tracking` logs them).

Built from what is on disk (``sweep.yaml``, ``base_lr.json``, ``report/summary.json``), so that
``mutransfer sync`` can rebuild a parent run from a results directory alone.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from analysis.schema import STATUS_DIVERGED, TAG_ROLE

# Trainer keys a run name always shows (T only for PC, whose inference steps are a real setting).
NAMED_KEYS = ("algorithm", "parametrization", "width", "lr", "inference_steps", "seed")
# MLflow's limit on a param value (MLflow 3: 6000 characters).
MAX_PARAM = 6000
# The experiment's runs-table view (an MLflow "shared view state": an experiment tag the UI reads
# when the URL carries ?viewStateShareKey=KEY): the columns a transfer study needs.
VIEW_KEY = "mutransfer"
VIEW_COLUMNS = (
    [("params", k) for k in ("algorithm", "parametrization", "width", "log2_lr", "lr", "inference_steps", "seed")]
    + [("tags", k) for k in ("final_train_loss", "final_test_loss", "final_test_acc", "diverged", "wall_s")]
    + [("tags", "mutransfer.status")]
)
VIEW_GROUPS = ("algorithm", "parametrization")
# The report's figures the parent run's description shows, (file, alt text); MLflow's description shows an
# image at its own pixel size (its sanitizer drops width attributes), so a wider one is shown as a copy
# at most PREVIEW_PX wide (:func:`orchestrator.stores.tracking.log_report` writes it) linked to the original.
DESCRIPTION_IMAGES = (
    ("lr_star_vs_width.png", "optimal learning rate against width"),
    ("loss_vs_lr.png", "loss against learning rate"),
)
PREVIEW_PX = 720
# What MLflow refuses in a metric or tag key (it takes alphanumerics, _ - . space : /).
_KEY_UNSAFE = re.compile(r"[^\w\-. :/]")


def log2_lr(lr: float) -> float:
    """log2 of the learning rate, rounded to 4 decimals (the grid's octaves read as integers)."""
    return round(math.log2(float(lr)), 4)


def lr_label(lr: float) -> str:
    """``2^-6`` for a learning rate on a quarter-octave grid, else ``2^-5.87`` (two decimals)."""
    x = math.log2(float(lr))
    q = round(x * 4) / 4
    return f"2^{q:g}" if abs(x - q) < 1e-9 else f"2^{x:.2f}"


def run_name(row: dict[str, Any], swept: list[str] | tuple[str, ...] = ()) -> str:
    """A trial run's readable name, e.g. ``pc-mup-w256-lr2^-6-T20-s0``; other swept keys as ``key=value``."""
    parts = [str(row["algorithm"]), str(row["parametrization"]), f"w{int(row['width'])}", f"lr{lr_label(row['lr'])}"]
    if row.get("algorithm") == "pc" and row.get("inference_steps") is not None:
        parts.append(f"T{int(row['inference_steps'])}")
    parts += [f"{k}={row[k]}" for k in swept if k not in NAMED_KEYS and k in row]
    parts.append(f"s{int(row['seed'])}")
    return "-".join(parts)


def group_label(group: dict[str, Any]) -> str:
    """``pc-mup-T10``, ``pc-mup-T20-gamma_bar_L:-1.0``: the group's keys as one label that MLflow takes
    in a metric or tag key (T only for PC; any character MLflow refuses there becomes ``_``)."""
    parts = []
    for k, v in group.items():
        if k == "inference_steps":
            if group.get("algorithm") == "pc":
                parts.append(f"T{v}")
        elif k in ("algorithm", "parametrization"):
            parts.append(str(v))
        else:
            parts.append(f"{k}:{v}")
    return _KEY_UNSAFE.sub("_", "-".join(parts)) or "all"


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The resolved sweep config flattened to ``section.key`` params (lists as written, values cut at
    MLflow's limit); execution keys (resources, tracking, ...) included, ``name`` left out (the run's name)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix:
            out[prefix] = json.dumps(value)[:MAX_PARAM] if isinstance(value, (list, dict)) else str(value)

    walk("", {k: v for k, v in config.items() if k != "name"})
    return out


def view_state() -> str:
    """The JSON of the runs-table view stored as the experiment tag ``mlflow.sharedViewState.<VIEW_KEY>``:
    the study's columns, the trial runs grouped by algorithm and parametrization (groups open, so the
    trials are listed rather than folded under their parent; the parent runs under "Additional runs"),
    sorted by the tag ``mutransfer.role`` ascending: the server returns the parent runs (``sweep``, the
    verdicts) before the trials, so they are on the first page rather than after every "Load more".
    (MLflow 3.17 takes from a shared view state the search facets ``searchFilter``, ``orderByKey``,
    ``orderByAsc``, ... and the UI keys ``selectedColumns``, ``groupBy``, ``compareRunCharts``, ...;
    ``runsPinned`` it drops.)"""
    return json.dumps(
        {
            "orderByKey": f"tags.`{TAG_ROLE}`",
            "orderByAsc": True,
            "selectedColumns": [f"{kind}.`{name}`" for kind, name in VIEW_COLUMNS],
            "groupBy": {
                "aggregateFunction": "min",
                "groupByKeys": [{"mode": "param", "groupByData": k} for k in VIEW_GROUPS],
            },
        }
    )


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table, machine-learning view, with the study's columns."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={VIEW_KEY}"
    )


def artifact_link(run_id: str, path: str) -> str:
    """A link that MLflow's markdown viewer and run description resolve: the server's own
    ``get-artifact`` route, relative to the UI's page (no scheme, so its URL filter keeps it)."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{SIG}g}"
    return str(v)


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v == "inf" or (isinstance(v, float) and math.isinf(v)):
        return "∞"
    return f"{100 * float(v):.{SIG}g}%"


def _num(v: Any) -> float | None:
    """A summary.json number (null, "inf", "-inf" allowed) as a finite float, else None."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def sweep_description(name: str, counts: dict[str, int], report_link: str | None = None) -> str:
    """The parent run's description before (or without) an analysis: what ran, by status."""
    text = f"**{name}**: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + " trials."
    if report_link:
        text += f" [Transfer report]({report_link})"
    return text


def _level(summary: dict[str, Any]) -> str:
    """The intervals' level as ``95%`` (summary.json's ``level``, else its groups', else 95%)."""
    groups = summary.get("groups") or [{}]
    level = _num(summary.get("level")) or _num(groups[0].get("level")) or 0.95
    return f"{100 * level:.{SIG - 1}g}%"


def verdict_summary(
    summary: dict[str, Any], run_id: str, previews: dict[str, str] | None = None
) -> tuple[str, dict[str, float], dict[str, str]]:
    """From ``report/summary.json``: the parent run's description (the verdict table, links to the
    report and its plots: :data:`DESCRIPTION_IMAGES`, each shown as its copy in ``previews``, ``{png:
    artifact path}``, where it has one, linked to the full-size figure), metrics ``drift_k/<group>``, ``drift_k_lo/..``, ``drift_k_hi/..``,
    ``max_regret/<group>`` (the largest excess regret), ``base_regret/<group>`` (the base width's own
    regret, the noise floor), ``lr_star_base/<group>``, ``k_edge/<group>`` (4 significant figures; a value
    that is ∞ or NaN is a tag of that key instead, e.g. ``max_regret/<group>`` = ``"inf"``) and tags
    ``verdict/<group>`` and, where the held-out metric was judged, ``held_out_verdict/<group>``."""
    keys = list(summary.get("group_keys") or [])
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    lv = _level(summary)
    lines = [
        f"| group | base η* | drift k [{lv}] | excess regret [{lv}] | base regret | k_edge | held-out | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in summary.get("groups", []):
        label = group_label({k: g.get(k) for k in keys})
        for metric, key in (
            ("drift_k", "drift_exponent"),
            ("drift_k_lo", "drift_lo"),
            ("drift_k_hi", "drift_hi"),
            ("max_regret", "max_regret"),
            ("base_regret", "base_regret"),
            ("lr_star_base", "lr_star_base"),
            ("k_edge", "edge_exponent"),
        ):
            if key in g:  # a finite value a metric (rounded), ∞ or NaN a tag of the same key
                m, t = split_values({f"{metric}/{label}": g[key]})
                metrics.update(m)
                tags.update(t)
        tags[f"verdict/{label}"] = str(g.get("verdict"))
        held = g.get("held_out_verdict")
        if held:
            tags[f"held_out_verdict/{label}"] = str(held)
        lines.append(
            f"| {label} | {_fmt(g.get('lr_star_base'))} | {_fmt(g.get('drift_exponent'))} "
            f"[{_fmt(g.get('drift_lo'))}, {_fmt(g.get('drift_hi'))}] | {_pct(g.get('max_regret'))} "
            f"[{_pct(g.get('regret_lo'))}, {_pct(g.get('regret_hi'))}] | {_pct(g.get('base_regret'))} "
            f"| {_fmt(g.get('edge_exponent'))} | {held or '–'} | **{g.get('verdict')}** |"
        )
    th = summary.get("thresholds") or {}
    held_metric = (summary.get("held_out") or {}).get("metric")
    head = (
        f"**{summary.get('sweep') or 'sweep'}**: {summary.get('mode')} {summary.get('metric')}; transfers when "
        f"k's {lv} interval lies within ±{th.get('max_drift')}, the excess regret over the base width's has its "
        f"upper bound ≤ {_pct(th.get('max_regret'))} and no η* is edge-limited (μP: and its SP control drifts)."
        + (f" Held-out: the verdict on {held_metric}." if held_metric else "")
    )
    links = (
        f"[Full report (HTML)]({artifact_link(run_id, 'report/report.html')}) · "
        f"[report.md]({artifact_link(run_id, 'report/report.md')}) · "
        f"[summary.json]({artifact_link(run_id, 'report/summary.json')})"
    )
    images = []
    for png, alt in DESCRIPTION_IMAGES:
        full = artifact_link(run_id, "report/" + png)
        small = (previews or {}).get(png)
        images.append(f"[![{alt}]({artifact_link(run_id, small)})]({full})" if small else f"![{alt}]({full})")
    return "\n\n".join([head, "\n".join(lines), links, *images]) + "\n", metrics, tags


def base_summary(base: dict[str, Any]) -> tuple[str, dict[str, float], dict[str, str]]:
    """From ``base_lr.json``: the base search's description (best lr per group), metrics
    ``best_lr/<group>``, ``best_log2_lr/<group>``, ``best_value/<group>``, ``trials/<group>``."""
    metrics: dict[str, float] = {}
    lines = [
        (
            f"Optuna search at the base width ({base.get('mode')} {base.get('metric')}, "
            f"{base.get('trials_per_study')} trials per group)."
        ),
        "",
        "| group | best lr | log2 | best value | trials | best trial |",
        "|---|---|---|---|---|---|",
    ]
    for g in base.get("groups", []):
        label = group_label(g.get("group") or {})
        lr = (g.get("best") or {}).get("lr")
        if _num(lr) is not None and lr > 0:
            metrics[f"best_lr/{label}"] = sig(lr)
            metrics[f"best_log2_lr/{label}"] = log2_lr(lr)
        if _num(g.get("best_value")) is not None:
            metrics[f"best_value/{label}"] = sig(g["best_value"])
        metrics[f"trials/{label}"] = float(g.get("trials_complete") or 0)
        log2 = f"{log2_lr(lr):g}" if _num(lr) is not None and lr > 0 else "–"
        lines.append(
            f"| {label} | {_fmt(lr)} | {log2} | {_fmt(g.get('best_value'))} | "
            f"{g.get('trials_complete')} | {g.get('best_trial_id') or '–'} |"
        )
    return "\n".join(lines) + "\n", metrics, {}


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def md_for_mlflow(md: str, run_id: str, folder: str = "report") -> str:
    """``report.md`` with its relative image links pointed at the server's ``get-artifact`` route."""
    return re.sub(
        r"!\[([^\]]*)\]\(([^):/?#]+\.(?:png|svg|jpg))\)",
        lambda m: f"![{m.group(1)}]({artifact_link(run_id, f'{folder}/{m.group(2)}')})",
        md,
    )


def md_served_at(md: str, base: str) -> str:
    """``report.md`` (as :func:`md_for_mlflow` wrote it) with its image links absolute on ``base``:
    MLflow's markdown viewer (3.17) shows an image only when its URL has a scheme, and writes a
    relative one out as text (its run descriptions show relative ones)."""
    return re.sub(
        r"!\[([^\]]*)\]\((?:https?://[^/)\s]+/)?(get-artifact\?[^)\s]+)\)",
        lambda m: f"![{m.group(1)}]({base.rstrip('/')}/{m.group(2)})",
        md,
    )


# ---- numbers MLflow shows: rounded, and ∞/NaN as tags ------------------------------------------
SIG = 4  # significant figures of the numbers the parent run and the experiment description show


def sig(v: float, n: int = SIG) -> float:
    """``v`` rounded to ``n`` significant figures (MLflow's tables otherwise show 8 digits)."""
    v = float(v)
    return float(f"{v:.{n}g}") if math.isfinite(v) and v != 0 else v


def nonfinite(v: Any) -> str | None:
    """``"inf"``, ``"-inf"`` or ``"nan"`` for a value MLflow cannot log as a metric (summary.json writes
    ∞ as ``"inf"`` and NaN as null), else None."""
    try:
        x = float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return None
    return None if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def tag_number(v: Any) -> str:
    """A number as a tag's text: an integer as written (``2``), else :data:`SIG` significant figures
    (``0.1235``), ∞ and NaN as ``inf``, ``-inf``, ``nan``; anything else as ``str``."""
    if isinstance(v, bool):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return nonfinite(x) or "nan"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.{SIG}g}"


def trial_summary(row: dict[str, Any], keys: tuple[str, ...], extra: dict[str, float] | None = None) -> dict[str, str]:
    """A trial's own numbers as tags: ``keys`` of its trials row that it has (``diverged`` = 1 or 0 from its
    status) and ``extra`` (where it diverged), each as :func:`tag_number`."""
    out = {}
    for k in keys:
        if k == "diverged":
            out[k] = "1" if row.get("status") == STATUS_DIVERGED else "0"
        elif k in row and row[k] is not None:
            out[k] = tag_number(row[k])
    out.update({k: tag_number(v) for k, v in (extra or {}).items()})
    return out


def split_values(values: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Per key: a finite value as a metric rounded to :data:`SIG` figures, ∞ or NaN (or null) as a tag
    of the same key (``max_regret/bp-sp`` = ``"inf"``), so that nothing is silently missing."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for k, v in values.items():
        bad = nonfinite(v)
        if bad is None:
            metrics[k] = sig(v)
        else:
            tags[k] = bad
    return metrics, tags


# ---- the transfer study as metric series the chart view plots ----------------------------------
def lr_step(lr: float) -> int:
    """The step of a ``loss_vs_log2lr/...`` point: ``round(4 · log2 lr)``, quarter octaves (lr = 2^(step/4);
    the grid's octaves and the refinement's quarter octaves land on integers; negative below lr = 1)."""
    return round(4 * math.log2(float(lr)))


def transfer_series(summary: dict[str, Any], trials: Any = None) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` points for the parent run: ``lr_star/<group>`` = η* at step = width (from
    ``summary.json``'s ``per_width``) and, from the sweep's ``trials`` (a DataFrame), the mean over seeds of
    the analysed metric against the learning rate per width, ``loss_vs_log2lr/<group>/w<width>`` at step
    :func:`lr_step` (seeds whose loss is not finite, the diverged ones, left out; a point where every
    seed diverged is absent, so a curve ends at the stability edge). Values rounded to :data:`SIG` figures."""
    keys = list(summary.get("group_keys") or [])
    out: list[tuple[str, float, int]] = []
    for row in summary.get("per_width") or []:
        lr = _num(row.get("lr_star"))
        if lr is not None and _num(row.get("width")) is not None:
            out.append((f"lr_star/{group_label({k: row.get(k) for k in keys})}", sig(lr), int(row["width"])))
    metric = str(summary.get("metric") or "final_train_loss")
    if trials is None or len(trials) == 0 or metric not in trials or not keys or "width" not in trials:
        return out
    import numpy as np

    df = trials[[*keys, "width", "lr", metric]].copy() if all(k in trials for k in keys) else None
    if df is None:
        return out
    df[metric] = df[metric].astype(float).where(np.isfinite(df[metric].astype(float)))
    df = df.dropna(subset=[metric])
    for (*group, width, lr), loss in df.groupby([*keys, "width", "lr"], dropna=False)[metric].mean().items():
        label = group_label(dict(zip(keys, [_plain(g) for g in group], strict=True)))
        out.append((f"loss_vs_log2lr/{label}/w{int(width)}", sig(loss), lr_step(lr)))
    return out


def _plain(v: Any) -> Any:
    """A pandas/numpy scalar as the plain value summary.json holds (``10`` rather than ``10.0`` or np.int64)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# ---- the experiment's description ---------------------------------------------------------------
def experiment_description(
    summary: dict[str, Any], config: dict[str, Any] | None = None, trials: Any = None, run_id: str | None = None
) -> str:
    """The experiment's description (markdown, the tag ``mlflow.note.content`` on the experiment): the
    study's setup (data, model, loop, widths, seeds, trials), the transfer rule and each group's verdict,
    numbers at :data:`SIG` significant figures."""
    config = config or {}
    tr, data, loop = config.get("trainer") or {}, config.get("data") or {}, config.get("train") or {}
    grid = config.get("grid") or {}
    name = summary.get("sweep") or config.get("name") or "sweep"
    lines = [f"## {name}: does the optimal learning rate transfer across widths?", ""]
    setup = []
    if data:
        sub = data.get("subset")
        setup.append(
            f"data {data.get('dataset')}"
            + (f" ({sub} training images" if sub else " (all training images")
            + (f", {data.get('test_subset')} test)" if data.get("test_subset") else ")")
        )
    model = [f"{k} {tr[k]}" for k in ("model", "depth", "activation", "optimizer", "loss") if tr.get(k) is not None]
    if model:
        setup.append(", ".join(model))
    if loop:
        setup.append(f"{loop.get('epochs')} epochs of batch {loop.get('batch_size')}")
    widths = (
        sorted({int(w) for w in trials["width"]}) if trials is not None and "width" in trials else grid.get("width")
    )
    if widths:
        setup.append(f"widths {', '.join(map(str, widths))} (base {tr.get('base_width', '?')})")
    if trials is not None and "seed" in trials:
        setup.append(f"{trials['seed'].nunique()} seeds")
    if trials is not None and "status" in trials:
        counts = trials["status"].value_counts()
        setup.append(f"{len(trials)} trials (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")")
    if setup:
        lines += ["**Setup**: " + "; ".join(setup) + ".", ""]
    th = summary.get("thresholds") or {}
    lv = _level(summary)
    lines += [
        f"**Rule**: {summary.get('mode')} {summary.get('metric')}; a group transfers when the {lv} interval of "
        f"the drift exponent k (η* ∝ width^k) lies within ±{th.get('max_drift')} and the excess regret's upper "
        f"bound is ≤ {_pct(th.get('max_regret'))}.",
        "",
        "| group | verdict | k | excess regret | why |",
        "|---|---|---|---|---|",
    ]
    keys = list(summary.get("group_keys") or [])
    verdicts = []
    for g in summary.get("groups", []):
        label = group_label({k: g.get(k) for k in keys})
        verdicts.append(str(g.get("verdict")))
        lines.append(
            f"| {label} | **{g.get('verdict')}** | {_fmt4(g.get('drift_exponent'))} | {_pct(g.get('max_regret'))} "
            f"| {str(g.get('verdict_reason') or '').replace('|', '/')} |"
        )
    if verdicts:
        tally = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts)))
        lines += ["", f"**Verdict**: {tally} of {len(verdicts)} groups."]
    if run_id:
        lines += ["", f"The report: [report.html]({artifact_link(run_id, 'report/report.html')}) on run `{name}`."]
    lines += [
        "",
        "Charts: `lr_star/<group>` (η* against width, step = width) and `loss_vs_log2lr/<group>/w<width>` "
        "(mean loss over seeds, step = 4·log2 lr) on the run named after the sweep.",
    ]
    return "\n".join(lines) + "\n"


def _fmt4(v: Any) -> str:
    bad = nonfinite(v)
    if bad is not None:
        return {"inf": "∞", "-inf": "−∞"}.get(bad, "–")
    return f"{float(v):.{SIG}g}"
