"""Several sweeps side by side (`mutransfer analyze A B ... --out DIR`): each sweep analysed on its own
(:func:`analysis.transfer.analyze_logs`, the verdict its own report gives), then one table of (sweep,
group) rows, the keys of ``sweep.yaml`` that differ between the sweeps, the trial ids they share, and
η* against width with every sweep's groups in one figure (:mod:`analysis.compare_plots`).

Nothing is merged: a trial recorded in two sweeps counts in each sweep's own analysis, and the
report says how many trial ids the sweeps share.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import current_umask, write_parquet_atomic
from .load import SweepLogs, read_sweep_yaml
from .plots import DPI, FORMATS, group_label
from .report import level_text, render
from .report_setup import advice, blank_inapplicable
from .transfer import TransferResult

# Marks a comparison's directory, so that --out may replace an earlier comparison and nothing else.
MARKER = "comparison.json"
# Keys of sweep.yaml that change how a sweep ran, not what it trained or how it is judged.
RUN_ONLY = ("resources", "max_concurrent", "max_failures", "tracking", "search.storage", "search.max_concurrent")
# The per-group values of the comparison table, as each sweep's summary.json names them.
VALUE_COLUMNS = (
    "lr_star_base",
    "drift_exponent",
    "drift_lo",
    "drift_hi",
    "max_regret",
    "regret_lo",
    "regret_hi",
    "base_regret",
    "n_seeds",
    "level",
    "verdict",
)


@dataclass
class SweepAnalysis:
    """One sweep of a comparison: its label, directory, logs, config and its own analysis."""

    label: str
    path: Path
    logs: SweepLogs
    cfg: dict
    result: TransferResult


def labels(names: list[str], paths: list[Path]) -> list[str]:
    """The sweeps' labels: their names, or their paths where two sweeps share a name."""
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def sweep_analysis(
    path: str | Path, logs: SweepLogs, result: TransferResult, label: str | None = None
) -> SweepAnalysis:
    """A :class:`SweepAnalysis` of ``logs`` (read from ``path``) and its ``result``."""
    return SweepAnalysis(label or logs.name, Path(path), logs, read_sweep_yaml(path), result)


def comparison_table(sweeps: list[SweepAnalysis]) -> pd.DataFrame:
    """One row per (sweep, group): ``sweep``, ``group`` (its label, e.g. ``PC μP T=20``), the group keys
    of every sweep (blank where a sweep does not have one), then :data:`VALUE_COLUMNS` from each sweep's
    own ``result.groups`` (k, its interval, the largest excess regret and its interval, the verdict), and
    ``metric``. Rows are ordered by group (first seen), then by sweep in the order given."""
    keys: list[str] = []
    for s in sweeps:
        keys += [k for k in s.result.keys if k not in keys]
    rows = []
    for i, s in enumerate(sweeps):
        for _, g in s.result.groups.iterrows():
            row = {"sweep": s.label, "group": group_label(g, s.result.keys)}
            row.update({k: g[k] if k in s.result.keys else None for k in keys})
            row.update({c: g.get(c, np.nan) for c in VALUE_COLUMNS})
            row["metric"] = s.result.metric
            row["_sweep"] = i
            rows.append(row)
    df = pd.DataFrame(rows)
    order = {g: j for j, g in enumerate(dict.fromkeys(df.group))}
    df = df.assign(_group=df.group.map(order)).sort_values(["_group", "_sweep"], kind="stable")
    return df.drop(columns=["_group", "_sweep"]).reset_index(drop=True)


def _flat(cfg: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _text(v) -> str:
    """A config value as the table shows it; absent, null and empty (``plugins: []``) alike as ``–``."""
    if v is None or (isinstance(v, (list, dict)) and not v):
        return "–"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def setup_differences(sweeps: list[SweepAnalysis]) -> pd.DataFrame:
    """The keys of ``sweep.yaml`` (dotted, e.g. ``train.epochs``) whose values differ between the sweeps:
    one row per key, ``key``, ``kind`` (``setup``, or ``run only`` for :data:`RUN_ONLY`: resources,
    tracking, ...), then each sweep's value (``–`` where its file lacks the key or holds null or an
    empty list); the sweep's ``name`` left out. Setup keys first, each kind in the files' order."""
    flats = [_flat(s.cfg) for s in sweeps]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    rows = []
    for k in keys:
        if k == "name":
            continue
        values = [_text(f.get(k)) for f in flats]
        if len(set(values)) > 1:
            run_only = any(k == p or k.startswith(p + ".") for p in RUN_ONLY)
            rows.append(
                {"key": k, "kind": "run only" if run_only else "setup", **dict(zip((s.label for s in sweeps), values))}
            )
    df = pd.DataFrame(rows, columns=["key", "kind", *(s.label for s in sweeps)])
    return df.sort_values("kind", kind="stable", key=lambda c: c != "setup").reset_index(drop=True)


def overlaps(sweeps: list[SweepAnalysis]) -> list[tuple[str, str, int]]:
    """``(sweep a, sweep b, n)`` for each pair of sweeps that share ``n > 0`` trial ids."""
    ids = [set(s.logs.trials.trial_id.astype(str)) for s in sweeps]
    return [
        (sweeps[i].label, sweeps[j].label, len(ids[i] & ids[j]))
        for i in range(len(sweeps))
        for j in range(i + 1, len(sweeps))
        if ids[i] & ids[j]
    ]


def overlap_text(sweeps: list[SweepAnalysis]) -> str:
    """One sentence: which sweeps share trial ids and how many, or that none do."""
    pairs = overlaps(sweeps)
    if not pairs:
        return "The sweeps share no trial id: every trial belongs to one sweep."
    listed = "; ".join(f"{a} and {b} share {n} trial id{'s' * (n != 1)}" for a, b, n in pairs)
    return (
        f"The sweeps overlap: {listed} (the same trainer, data and loop config, width, learning rate and "
        "seed). They are not merged: each sweep's analysis counts its own copy of a shared trial."
    )


def verdict_changes(table: pd.DataFrame) -> list[str]:
    """``BP μP: inconclusive (a), transfers (b)`` for each group whose verdict differs between sweeps."""
    out = []
    for group, rows in table.groupby("group", sort=False):
        if rows.verdict.nunique() > 1:
            out.append(f"{group}: " + ", ".join(f"{v} ({s})" for s, v in zip(rows.sweep, rows.verdict)))
    return out


def _pct(v) -> str:
    v = float(v) if v is not None else np.nan
    if np.isnan(v):
        return "–"
    return f"{100 * v:.3g}%" if np.isfinite(v) else ("∞" if v > 0 else "−∞")


def _num(v) -> str:
    v = float(v) if v is not None else np.nan
    return "–" if np.isnan(v) else f"{v:.3g}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison table as the report and the terminal show it: k and the excess regret with
    their intervals at each sweep's own level, as text."""
    out = table[["group", "sweep"]].copy()
    out["base η*"] = [_num(v) for v in table.lr_star_base]
    out["drift k [interval]"] = [
        f"{_num(k)} [{_num(a)}, {_num(b)}]" for k, a, b in zip(table.drift_exponent, table.drift_lo, table.drift_hi)
    ]
    out["excess regret [interval]"] = [
        f"{_pct(r)} [{_pct(a)}, {_pct(b)}]" for r, a, b in zip(table.max_regret, table.regret_lo, table.regret_hi)
    ]
    out["base regret"] = [_pct(v) for v in table.base_regret]
    out["level"] = [level_text(v) for v in table.level]
    out["seeds"] = table.n_seeds
    if table.metric.nunique() > 1:
        out["metric"] = table.metric
    out["verdict"] = table.verdict
    return blank_inapplicable(out)


def _json(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return None if np.isnan(v) else (v if np.isfinite(v) else ("inf" if v > 0 else "-inf"))
    return v


def comparison_json(sweeps: list[SweepAnalysis], table: pd.DataFrame, diffs: pd.DataFrame) -> dict:
    """comparison.json: the sweeps (label, path, source, metric, mode, level, thresholds), the table's
    rows (NaN as null, an infinite regret as "inf", as summary.json writes them), the differing keys
    and the shared trial ids."""
    return {
        "sweeps": [
            {
                "label": s.label,
                "path": str(s.path),
                "source": s.logs.source,
                "metric": s.result.metric,
                "mode": s.result.mode,
                "level": s.result.level,
                "thresholds": {"max_drift": s.result.max_drift, "max_regret": s.result.max_regret},
            }
            for s in sweeps
        ],
        "groups": [{k: _json(v) for k, v in row.items()} for row in table.to_dict("records")],
        "differences": diffs.to_dict("records"),
        "overlaps": [{"a": a, "b": b, "shared_trial_ids": n} for a, b, n in overlaps(sweeps)],
    }


def _blocks(sweeps: list[SweepAnalysis], table: pd.DataFrame, diffs: pd.DataFrame, png: Path | None) -> list[tuple]:
    names = ", ".join(s.label for s in sweeps)
    blocks: list[tuple] = [
        ("h1", f"Learning-rate transfer compared: {names}"),
        (
            "p",
            "Each sweep analysed on its own, as `mutransfer analyze` analyses one sweep (its own objective, "
            "thresholds, base width and interval level); this report only puts the results side by side. "
            "Sweeps: "
            + "; ".join(
                f"{s.label} ({s.path}, {len(s.logs.trials)} trials, {s.result.mode} {s.result.metric}, "
                f"±{s.result.max_drift:g}, {s.result.max_regret:.0%})"
                for s in sweeps
            )
            + ".",
        ),
        ("p", overlap_text(sweeps)),
        ("h2", "Setup differences"),
    ]
    if diffs.empty:
        blocks.append(("p", "The sweeps' sweep.yaml files agree on every key but the name."))
    else:
        blocks += [
            (
                "p",
                "The keys of sweep.yaml whose values differ (`–`: the key is absent); `run only` keys change "
                "how a sweep ran (resources, tracking), not what it trained.",
            ),
            ("table", diffs),
        ]
    missing = [s.label for s in sweeps if not s.cfg]
    if missing:
        blocks.append(("p", f"No sweep.yaml in {', '.join(missing)}: its setup is unknown here."))
    blocks += [
        ("h2", "Verdicts side by side"),
        (
            "p",
            "One row per group and sweep: k, the drift exponent of η* against width, and the largest excess "
            "regret over the base width's, each with its interval at the sweep's own level, and the sweep's own "
            "verdict (each sweep's report explains the rule). comparison.parquet holds the numbers.",
        ),
        ("table", display_table(table)),
    ]
    changes = verdict_changes(table)
    blocks.append(
        (
            "p",
            ("Verdicts that differ between the sweeps: " + "; ".join(changes) + ".")
            if changes
            else "Every group present in several sweeps has the same verdict in each.",
        )
    )
    if png is not None:
        blocks += [
            ("h2", "Optimal learning rate against width"),
            (
                "p",
                "η* (mean over seeds) of every sweep's groups, one panel per algorithm: colour = group (its "
                "parametrization and the keys that vary inside a sweep; a key a sweep holds fixed is among the "
                "setup differences), marker and line style = sweep. The intervals are in each sweep's own report.",
            ),
            ("img", png.name, "optimal learning rate against width, every sweep"),
        ]
    notes = [f"{s.label}: {advice(n)}" for s in sweeps for n in s.result.notes + s.logs.notes]
    if notes:
        blocks += [("h2", "Notes"), ("ul", notes)]
    return blocks


def write_comparison(
    sweeps: list[SweepAnalysis], out_dir: str | Path, dpi: int = DPI, formats: tuple[str, ...] = FORMATS
) -> Path:
    """Write ``out_dir``: report.md, report.html, comparison.parquet (:func:`comparison_table`),
    comparison.json (:func:`comparison_json`) and lr_star_compare.png (and the other ``formats``).

    Written to a temporary directory beside ``out_dir`` that then replaces it (a crash leaves the
    previous comparison whole).

    Returns:
        ``out_dir``.
    """
    from .compare_plots import plot_lr_star_compare

    out_dir = Path(out_dir)
    table = comparison_table(sweeps)
    diffs = setup_differences(sweeps)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        png = plot_lr_star_compare([(s.label, s.result) for s in sweeps], tmp / "lr_star_compare.png", dpi, formats)
        write_parquet_atomic(table, tmp / "comparison.parquet")
        doc = comparison_json(sweeps, table, diffs)
        (tmp / MARKER).write_text(json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
        md, page = render(_blocks(sweeps, table, diffs, png), tmp)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(page)
        umask = current_umask()
        tmp.chmod(0o777 & ~umask)
        for f in tmp.iterdir():
            f.chmod(0o666 & ~umask)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
