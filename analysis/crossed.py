"""Issue 30's crossed table and its k-against-length figure, from several studies' results directories.

Each study (``search_spaces/crossed_*.yaml``, ``depth_tp_long_cpu.yaml``) is read at given SGD-step counts
(:func:`analysis.over_time.k_at_steps`) and at every epoch (:func:`analysis.over_time.k_over_time`); the
tables are stacked with the study's ``loss`` (``sweep.yaml``'s trainer or grid) as a key, so one table
and one figure hold loss × length × algorithm × parametrization::

    python -m analysis.crossed docs/crossed_bptp_mse docs/crossed_bptp_ce docs/crossed_pc_mse \\
        docs/crossed_pc_ce --steps 100,300,1000 --out docs/crossed

writes ``crossed.parquet`` (one row per group and length), ``crossed.md`` (the table for RESULTS.md) and
``k_against_length.png``/``.svg`` (:func:`analysis.over_time_plots.plot_k_over_time`: a panel per
algorithm and variant and loss, SP beside μP).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .over_time import k_at_steps, k_over_time

# Keys that are columns of their own or say nothing (left out of the labels), and PC's own keys (shown for PC only).
_LABEL_SKIP = ("algorithm", "parametrization", "loss", "base_width")
_PC_KEYS = ("inference_steps", "gamma_bar_L", "sequential_inference", "fixed_prediction")


def _loss(cfg: dict) -> str:
    """The study's loss: ``trainer.loss``, a one-valued ``grid.loss``, else the trainers' default (mse)."""
    grid = (cfg.get("grid") or {}).get("loss")
    if isinstance(grid, list) and len(grid) == 1:
        return str(grid[0])
    return str((cfg.get("trainer") or {}).get("loss", "mse"))


def read_study(
    results_dir: str | Path, steps: Sequence[float], over_time: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(k at ``steps``, k at every epoch) of one results directory, each with ``study`` and ``loss`` columns.

    ``over_time=False`` skips the every-epoch table (None): the table at ``steps`` alone is much cheaper."""
    from .load import load_sweep, read_sweep_yaml
    from .transfer import logs_level

    logs = load_sweep(results_dir)
    cfg = read_sweep_yaml(results_dir)
    kw = {
        "metric": logs.objective["metric"],
        "mode": logs.objective["mode"],
        "max_drift": logs.verify["max_drift"],
        "max_regret": logs.verify["max_regret"],
        "level": logs_level(logs.verify),
        "sweep_yaml_cfg": cfg,
    }
    at = k_at_steps(logs.trials, logs.history, steps, **kw)
    over = k_over_time(logs.trials, logs.history, **kw) if over_time else None
    loss = _loss(cfg)
    for t in (x for x in (at, over) if x is not None):
        keys = list(t.attrs.get("keys") or [])
        t.insert(0, "study", logs.name)
        t.insert(1, "loss", loss)
        t.attrs["keys"] = ["loss", *[k for k in keys if k != "loss"]]
    return at, over


def _stack(tables: list[pd.DataFrame]) -> pd.DataFrame:
    keys: list[str] = []
    for t in tables:
        keys += [k for k in t.attrs.get("keys", []) if k not in keys]
    out = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    for k in keys:  # a key one study lacks (a PC-only axis) reads "-" in the others, and every value as text
        if k not in out:
            out[k] = "-"
        elif out[k].isna().any():  # (a column of "-" beside bools or floats has no Parquet type)
            out[k] = [("-" if pd.isna(v) else str(v)) for v in out[k]]
    out.attrs.update({**(tables[0].attrs if tables else {}), "keys": keys})
    return out


def crossed(
    dirs: Sequence[str | Path], steps: Sequence[float] = (100, 300, 1000), over_time: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The crossed table (k, regret and verdict per group, loss and length) and the k-over-time table
    (None with ``over_time=False``)."""
    parts = [read_study(d, steps, over_time) for d in dirs]
    return _stack([p[0] for p in parts]), _stack([p[1] for p in parts]) if over_time else None


def _interval(v, lo, hi, percent: bool = False) -> str:
    """``v [lo, hi]``: k to two decimals, a regret (``percent``) in per cent to one; ∞ and n/a spelled out."""

    def f(x: float) -> str:
        if np.isposinf(x):
            return "∞"
        if not np.isfinite(x):
            return "n/a"
        return (f"{100 * x:+.1f}" if percent else f"{x:+.2f}").replace("-", "−")

    return f"{f(float(v))} [{f(float(lo))}, {f(float(hi))}]" + (" %" if percent else "")


def _widths(value) -> str:
    """The widths whose η* sat at the stability edge (a verdict cannot pass there), or –."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    return text.replace(",", ", ") if text else "–"


def crossed_markdown(table: pd.DataFrame) -> str:
    """The crossed table as Markdown: loss, SGD steps, group, parametrization, k, excess regret, the widths
    whose η* is edge-limited (the reason a k inside the band can stay ``inconclusive``), verdict."""
    keys = list(table.attrs.get("keys") or [])
    extra = [k for k in keys if k not in _LABEL_SKIP]
    level = float(table.attrs.get("level", 0.95))
    head = (
        f"| loss | SGD steps | algorithm | parametrization | k [{100 * level:.3g} %] | "
        f"max excess regret [{100 * level:.3g} %] | η* edge-limited at | verdict |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    order = table.sort_values(["loss", "algorithm", *extra, "target_steps", "parametrization"], kind="stable")
    for r in order.itertuples(index=False):
        d = r._asdict()
        shown = [k for k in extra if str(d[k]) not in ("-", "nan") and (d["algorithm"] == "pc" or k not in _PC_KEYS)]
        variant = " ".join(f"{k}={d[k]}" for k in shown)
        alg = f"{d['algorithm']} {variant}".strip()
        lines.append(
            f"| {d['loss']} | {float(d['sgd_steps']):.0f} | {alg} | {d['parametrization']} | "
            f"{_interval(d['drift_exponent'], d['drift_lo'], d['drift_hi'])} | "
            f"{_interval(d['max_regret'], d['regret_lo'], d['regret_hi'], percent=True)} | "
            f"{_widths(d.get('edge_limited_widths'))} | `{d['verdict']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.crossed DIR... [--steps 100,300,1000] --out OUT``: crossed.parquet, crossed.md and
    k_against_length.png under OUT. Exit 2 on a directory it cannot read."""
    import argparse
    import sys

    from .io import write_parquet_atomic, write_text_atomic
    from .load import LogError
    from .over_time_plots import plot_k_over_time

    p = argparse.ArgumentParser(prog="python -m analysis.crossed", description=main.__doc__)
    p.add_argument("dirs", nargs="+")
    p.add_argument("--steps", default="100,300,1000")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        steps = [float(s) for s in a.steps.split(",") if s.strip()]
        table, over = crossed(a.dirs, steps)
    except (ValueError, LogError, OSError) as exc:
        print(f"analysis.crossed: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, out / "crossed.parquet")
    text = crossed_markdown(table)
    write_text_atomic(text, out / "crossed.md")
    png = plot_k_over_time(over, out / "k_against_length.png")
    print(text)
    print(f"-> {out / 'crossed.parquet'}, {out / 'crossed.md'}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
