"""What the report says before and after its numbers: the sweep's setup (read from its recorded
config, ``sweep.yaml``, and its trials table), a one-line conclusion per group and overall, and what to
do about each note of the analysis."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .over_time import _n_train, sgd_steps_from_config
from .plots import ONLY_FOR, PAR_LABEL, group_label
from .transfer import TransferResult

# Inputs and classes of the built-in datasets (trainers/_data.py: Fashion-MNIST pooled by 1, 2, 4, 7).
KNOWN_DIMS = {"fmnist": (784, 10), "fmnist14": (196, 10), "fmnist7": (49, 10), "fmnist4": (16, 10)}
# The keys each algorithm reads besides the common ones, as the setup lists them.
ALGORITHM_KEYS = {
    "pc": ("inference_steps", "inference_lr", "gamma_bar_L", "pc_init", "sequential_inference"),
    "tp": ("feedback_lr", "target_step", "feedback"),
}


def _num(v) -> str:
    """A number at 3 significant figures (integers whole)."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def _values(trials: pd.DataFrame, col: str, cfg_value=None) -> str:
    """The distinct values of a trials column (sorted), else the config's value, else –."""
    if col in trials.columns and trials[col].notna().any():
        vals = sorted(trials[col].dropna().unique().tolist(), key=lambda v: (isinstance(v, str), v))
        return ", ".join(_num(v) for v in vals)
    return _num(cfg_value) if cfg_value is not None else "–"


def _lr_text(trials: pd.DataFrame, cfg: Mapping) -> str:
    """How the learning rates were chosen and which were measured."""
    grid, verify, search = (cfg.get(k) or {} for k in ("grid", "verify", "search"))
    lrs = np.sort(trials.lr.dropna().unique()) if "lr" in trials else np.array([])
    measured = (
        f"{len(lrs)} distinct rates measured, {_num(lrs.min())} to {_num(lrs.max())}" if len(lrs) else "none measured"
    )
    spec = grid.get("lr")
    if isinstance(spec, Mapping) and "log2" in spec:
        a, b, s = (list(spec["log2"]) + [1])[:3]
        return f"grid 2^{_num(a)} to 2^{_num(b)} in steps of {_num(s)} octave(s); {measured}"
    if isinstance(spec, (list, tuple)):
        return f"grid {', '.join(_num(v) for v in spec)}; {measured}"
    if verify.get("bracket") is not None:
        space = (search.get("space") or {}).get("lr") or {}
        base = (
            f"tune-base's η*_base ({search.get('trials', '?')} trials per group over "
            f"{_num(space.get('low'))} to {_num(space.get('high'))})"
            if space
            else "η*_base"
        )
        return (
            f"{base} · 2^k for k in {', '.join(_num(k) for k in verify['bracket'])}, extended by up to "
            f"{_num(verify.get('max_extend', '?'))} steps at an end and refined to "
            f"{_num(verify.get('resolution', '?'))} octave around each seed's optimum and stability edge; {measured}"
        )
    return measured


def setup_table(
    result: TransferResult, trials: pd.DataFrame, cfg: Mapping | None, history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The report's setup: one row per setting (``setting``, ``value``) from the sweep's recorded
    config (``sweep.yaml`` as a dict; may be empty) and its trials table, which wins where both say."""
    cfg = cfg or {}
    trainer, data, train = (cfg.get(k) or {} for k in ("trainer", "data", "train"))
    rows: list[tuple[str, str]] = []
    dataset = _values(trials, "dataset", data.get("dataset"))
    subset = data.get("subset")
    n = _n_train(data) if data else None
    rows.append(
        (
            "data",
            f"{dataset}; training subset {('all' if not subset else _num(subset))}"
            + (f" ({n} examples)" if n else "")
            + (f", test subset {_num(data['test_subset'])}" if data.get("test_subset") else ""),
        )
    )
    dims = KNOWN_DIMS.get(dataset)
    if dims:
        rows.append(("inputs → outputs", f"{dims[0]} → {dims[1]} classes"))
    rows.append(
        (
            "model",
            f"{_values(trials, 'model', trainer.get('model', 'mlp'))}, depth {_values(trials, 'depth', trainer.get('depth'))}"
            + (f", {trainer['activation']}" if trainer.get("activation") else ""),
        )
    )
    rows.append(("widths", _values(trials, "width")))
    rows.append(("base width", _values(trials, "base_width", trainer.get("base_width"))))
    rows.append(("optimizer", _values(trials, "optimizer", trainer.get("optimizer"))))
    rows.append(("loss", _num(trainer.get("loss", "–"))))
    epochs, batch = train.get("epochs"), train.get("batch_size")
    rows.append(
        ("epochs, batch size", f"{_num(epochs) if epochs is not None else '–'}, {_num(batch) if batch else '–'}")
    )
    steps = _sgd_steps(result, cfg, history)
    if steps:
        rows.append(("SGD steps per trial", steps))
    seeds = sorted(trials.seed.dropna().unique().tolist()) if "seed" in trials else []
    rows.append(("seeds", f"{len(seeds)} ({', '.join(_num(s) for s in seeds)})" if seeds else "–"))
    rows.append(("learning rates", _lr_text(trials, cfg)))
    pars = [PAR_LABEL.get(str(p), str(p)) for p in sorted(trials.parametrization.dropna().unique(), reverse=True)]
    rows.append(("parametrizations", ", ".join(pars)))
    for algo in sorted(trials.algorithm.dropna().astype(str).unique()):
        sub = trials[trials.algorithm.astype(str) == algo]
        own = [
            f"{k} {_values(sub, k, trainer.get(k))}"
            for k in ALGORITHM_KEYS.get(algo, ())
            if (k in sub.columns and sub[k].notna().any()) or trainer.get(k) is not None
        ]
        rows.append((f"algorithm {algo.upper()}", "; ".join(own) if own else "no keys of its own"))
    rows.append(
        (
            "objective",
            f"{result.mode} {result.metric}"
            + (f"; held out: {result.held_out.mode} {result.held_out.metric}" if result.held_out is not None else ""),
        )
    )
    rows.append(("thresholds", f"|k| ≤ {result.max_drift:g}, excess regret ≤ {result.max_regret:.0%}"))
    return pd.DataFrame(rows, columns=["setting", "value"])


def _sgd_steps(result: TransferResult, cfg: Mapping, history: pd.DataFrame | None = None) -> str | None:
    """SGD steps of a trial that ran every epoch: recorded (trials' or history's count), else from the config."""
    t = result.table
    if history is not None and "sgd_steps" in history.columns and history.sgd_steps.notna().any():
        ok = t[t.status == "ok"].trial_id if "status" in t else t.trial_id
        last = history[history.trial_id.isin(ok)].groupby("trial_id").sgd_steps.max().dropna()
        if len(last):
            lo, hi = int(last.min()), int(last.max())
            return f"{lo}" if lo == hi else f"{lo} to {hi}"
    if "sgd_steps" in t.columns and t.sgd_steps.notna().any():
        done = t[t.status == "ok"].sgd_steps.dropna() if "status" in t else t.sgd_steps.dropna()
        if len(done):
            lo, hi = int(done.min()), int(done.max())
            return f"{lo}" if lo == hi else f"{lo} to {hi}"
    epochs = (cfg.get("train") or {}).get("epochs")
    if epochs is None:
        return None
    v = float(sgd_steps_from_config(cfg, int(epochs)))
    return f"{int(v)} (from the config: epochs × ⌊examples / batch⌋)" if math.isfinite(v) else None


VERDICT_WORDS = {
    "transfers": "η* transfers across widths",
    "drifts": "η* drifts with width",
    "inconclusive": "inconclusive",
}


def conclusions(result: TransferResult) -> tuple[str, list[str]]:
    """The overall conclusion (one line) and one line per group."""
    g = result.groups
    lines = []
    for _, row in g.iterrows():
        label = group_label(row, result.keys)
        v = str(row.verdict)
        k = f"k = {row.drift_exponent:+.2f}" if np.isfinite(row.drift_exponent) else "k unknown"
        if np.isfinite(row.drift_lo) and np.isfinite(row.drift_hi):
            k += f" [{row.drift_lo:+.2f}, {row.drift_hi:+.2f}]"
        why = "" if v != "inconclusive" else f" ({three_figures(row.get('verdict_reason', ''))})"
        lines.append(f"{label}: {VERDICT_WORDS.get(v, v)}, {k}{why}.")
    parts = []
    for par in sorted(g.parametrization.astype(str).unique(), key=lambda p: (p != "mup", p)):
        sub = g[g.parametrization.astype(str) == par]
        by = {}
        for _, row in sub.iterrows():
            name = group_label(row, [k for k in result.keys if k != "parametrization"]).replace(
                f" {PAR_LABEL.get(par, par)}", ""
            )
            by.setdefault(str(row.verdict), []).append(name)
        said = "; ".join(f"{v} for {', '.join(names)}" for v, names in by.items())
        parts.append(f"{PAR_LABEL.get(par, par)} {said}")
    overall = "Conclusion: " + ". ".join(parts) + "."
    return overall, lines


def blank_inapplicable(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the keys an algorithm does not read (PC's inference_steps on BP and TP rows,
    :data:`analysis.plots.ONLY_FOR`) left empty."""
    if "algorithm" not in df.columns:
        return df
    out = df.copy()
    algo = out.algorithm.astype(str)
    for key, algos in ONLY_FOR.items():
        if key in out.columns:
            out[key] = out[key].astype(object).where(algo.isin(algos), "")
    return out


# What each note of the analysis asks the user to do (the note's pattern, the advice).
ADVICE = (
    (
        r"η\* is censored there",
        "to resolve it, measure beyond that end of the learning rates: rerun verify with a larger "
        "verify.max_extend (it extends an end while the best point lies there), or widen grid.lr for a grid sweep",
    ),
    (
        r"edge-limited",
        "to resolve it, measure between η* and the first diverged rate: rerun verify with a finer "
        "verify.resolution (it halves that gap down to the resolution), or give a grid sweep a finer grid.lr "
        "there; if the loss still falls up to the edge, the optimum is the stability edge and k_edge is the "
        "exponent to read",
    ),
    (
        r"^(?:.*: )?one seed",
        "to resolve it, rerun with three seeds or more (grid.seed or verify.seeds): the intervals and the excess "
        "regret's jackknife need them",
    ),
    (r"failed trial", "rerun the same command: failed trials run again, finished ones are kept"),
    (
        r"not among the widths",
        "add the base width to grid.width (or set trainer.base_width to one of the widths)",
    ),
)


def advice(note: str) -> str:
    """``note`` followed by what would resolve it, when the note is one the analysis knows."""
    for pattern, what in ADVICE:
        if re.search(pattern, note):
            return f"{note} — {what}."
    return note


INF_TEXT = (
    "∞ (regret): at that width a seed diverged at the base width's η* (its loss there is +∞), so the base η* "
    "does not carry over to that width at all. When every seed did, the lower bound is ∞ too and the group "
    "`drifts`; when only some did, the lower bound is unknown (–) and the regret alone decides nothing."
)


def has_inf(*tables: pd.DataFrame) -> bool:
    """Whether any cell of the tables is +∞ or says ∞."""
    for df in tables:
        for c in df.columns:
            col = df[c]
            if pd.api.types.is_numeric_dtype(col) and np.isinf(col.to_numpy(dtype=float)).any():
                return True
            if not pd.api.types.is_numeric_dtype(col) and col.astype(str).str.contains("∞").any():
                return True
    return False


def three_figures(text: str) -> str:
    """``text`` with every decimal number of more than 3 significant figures rounded to 3 (``-1.030`` as
    ``-1.03``, ``0.04592`` as ``0.0459``), its sign kept."""

    def fix(m: re.Match) -> str:
        num = m.group(0)
        digits = num.lstrip("+-").replace(".", "").lstrip("0")
        if len(digits) <= 3:
            return num
        v = float(num)
        out = f"{v:.3g}"
        return ("+" + out if num.startswith("+") else out) if "e" not in out else num

    return re.sub(r"[-+]?\d+\.\d+", fix, str(text))
