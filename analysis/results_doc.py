"""The generated parts of docs/RESULTS.md: each study's verdict table and the transfer claims table.

    python -m analysis.results_doc [--docs docs]

reads every ``docs/<study>/report/summary.json`` and ``sweep.yaml`` (regenerate those first with
``mutransfer analyze docs/<study> --no-mlflow``) and rewrites the blocks between
``<!-- <study> verdicts -->`` and ``<!-- end -->``, between ``<!-- claims -->`` and
``<!-- end claims -->``, between ``<!-- crossed -->`` and ``<!-- end crossed -->`` (issue 30's crossed
design: the committed ``crossed_*`` studies read at 100, 300 and 1000 SGD updates,
:func:`analysis.crossed.crossed`), and between ``<!-- fixed-width claims -->`` and
``<!-- end fixed-width claims -->`` (:mod:`analysis.results_theory`), and between ``<!-- <study> accuracy -->``
and ``<!-- end -->`` (whether the runs learn: :func:`accuracy_block`), and between ``<!-- <study> at steps -->``
and ``<!-- end -->`` (the verdict read at several lengths: ``report/k_at_steps.parquet``, :func:`steps_block`). ``tests/analysis/test_results_doc.py`` checks that the committed document
equals what this writes, so no verdict, interval or step count in those blocks is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from .crossed import crossed, crossed_markdown
from .load import read_sweep_yaml
from .over_time import sgd_steps_from_config
from .results_theory import fixed_width_block

# The transfer claims of the paper, each with the studies that decide it (label, study, filter on group keys).
CLAIMS = [
    (
        "μP transfers the optimal lr for BP, PC and TP where SP does not (MLP)",
        [
            ("demo", "demo_cpu", {}),
            ("study 0", "paper_mlp_pool_cpu", {}),
            ("study 0, 10 epochs", "paper_mlp_pool_e10_cpu", {}),
            ("study 1 (784 inputs)", "paper_mlp_cpu", {}),
        ],
    ),
    (
        "μP transfers PC's learning rate at every T and γ̄_L",
        [
            ("study 2, seeded", "paper_pc_steps_pool_cpu", {}),
            ("single-shot schedule", "pc_single_shot_pool_cpu", {}),
            ("study 2 (784 inputs)", "paper_pc_steps_cpu", {}),
        ],
    ),
    (
        "μP's transfer holds at depth (L = 3, 5, 8)",
        [
            ("study 4", "depth_pool_cpu", {}),
            ("study 4, PC at γ̄_L = −1", "depth_pc_gbar1_pool_cpu", {}),
            ("study 4b, TP that learns", "depth_tp_long_cpu", {}),
        ],
    ),
    (
        "the same in a CNN: μP transfers for BP, PC and TP, SP does not",
        [("study 3, seeded", "paper_cnn_pool_cpu", {}), ("study 3 (28 × 28)", "paper_cnn_cpu", {})],
    ),
]
# Issue 30's crossed design (loss x length x algorithm x parametrization): the studies, where committed, and
# the SGD-update counts each is read at (epochs 2, 6 and 20 of 50 updates).
CROSSED_STUDIES = ("crossed_bptp_mse", "crossed_bptp_ce", "crossed_pc_mse", "crossed_pc_ce")
CROSSED_STEPS = (100, 300, 1000)
LOSS_NAMES = {"ce": "cross-entropy", "mse": "MSE"}
VERDICT_HEAD = (
    "| {keys} | drift k [{lvl} interval] | excess regret [{lvl}] | base regret | k_edge | edge-limited at "
    "| held-out: {held} | seeds | verdict |"
)


def _special(v) -> str | None:
    """How a missing or infinite value reads (summary.json writes ±∞ as strings), None for a finite number."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, str) or math.isinf(v):
        return "∞" if str(v) in ("inf", "Infinity") or (not isinstance(v, str) and v > 0) else "−∞"
    return None


def _num(v, fmt: str = "+.3f") -> str:
    return _special(v) or format(v, fmt).replace("-", "−")


def _pct(v) -> str:
    return _special(v) or f"{100 * v:.1f}%".replace("-", "−")


def _level(summary: dict) -> str:
    lvl = summary["groups"][0].get("level", 0.95) if summary["groups"] else 0.95
    return f"{100 * float(lvl):.3g}%"


def verdict_block(summary: dict) -> str:
    """The verdict table of one study, from its summary.json."""
    keys = summary["group_keys"]
    held = next((g.get("held_out_metric") for g in summary["groups"] if g.get("held_out_metric")), None) or "–"
    head = VERDICT_HEAD.format(keys=" | ".join(keys), lvl=_level(summary), held=held)
    lines = [head, "|" + "---|" * (len(keys) + 8)]
    for g in summary["groups"]:
        k = f"{_num(g['drift_exponent'])} [{_num(g['drift_lo'])}, {_num(g['drift_hi'])}]"
        r = f"{_pct(g['max_regret'])} [{_pct(g['regret_lo'])}, {_pct(g['regret_hi'])}]"
        ho = g.get("held_out_verdict") or "–"
        if g.get("held_out_k") is not None and ho != "–":
            ho = f"{ho} (k {_num(g['held_out_k'], '+.2f')})"
        cells = [
            *(str(g[c]) for c in keys),
            k,
            r,
            _pct(g.get("base_regret")),
            _num(g.get("edge_exponent"), "+.2f"),
            g.get("edge_limited_widths") or "–",
            ho,
            str(g["n_seeds"]),
            g["verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy_block(trials: pd.DataFrame, keys: list[str]) -> str:
    """Whether a study's runs learn: per group and width, each seed's best test accuracy over its learning
    rates (ok trials), as the median over seeds [min, max]."""
    ok = trials[trials.status == "ok"]
    best = ok.groupby([*keys, "width", "seed"], dropna=False).final_test_acc.max().reset_index()
    widths = sorted(best.width.unique())
    lines = [
        f"| {' | '.join(keys)} | " + " | ".join(f"width {w}" for w in widths) + " |",
        "|" + "---|" * (len(keys) + len(widths)),
    ]
    for group, g in best.groupby(keys, dropna=False, sort=True):
        cells = []
        for w in widths:
            acc = g[g.width == w].final_test_acc
            cells.append(f"{acc.median():.2f} [{acc.min():.2f}, {acc.max():.2f}]" if len(acc) else "–")
        group = group if isinstance(group, tuple) else (group,)
        lines.append("| " + " | ".join(str(v) for v in group) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def steps_block(table: pd.DataFrame, keys: list[str]) -> str:
    """A study's verdicts read at several SGD-step counts (``python -m analysis.over_time``'s table): per group
    and length, k and the largest excess regret with their intervals, edge-limited widths, verdict."""
    from .crossed import _interval, _widths

    lines = [
        f"| {' | '.join(keys)} | SGD steps | k [95 %] | max excess regret [95 %] | η* edge-limited at | verdict |",
        "|" + "---|" * (len(keys) + 5),
    ]
    for r in table.sort_values([*keys, "target_steps"], kind="stable").to_dict("records"):
        lines.append(
            "| " + " | ".join(str(r[k]) for k in keys) + f" | {float(r['sgd_steps']):.0f} | "
            f"{_interval(r['drift_exponent'], r['drift_lo'], r['drift_hi'])} | "
            f"{_interval(r['max_regret'], r['regret_lo'], r['regret_hi'], percent=True)} | "
            f"{_widths(r.get('edge_limited_widths'))} | `{r['verdict']}` |"
        )
    return "\n".join(lines) + "\n"


def _setting(cfg: dict) -> str:
    """Loss, SGD steps, seeds and widths of a study, from its sweep.yaml."""
    trainer, train, grid = cfg.get("trainer") or {}, cfg.get("train") or {}, cfg.get("grid") or {}
    epochs = int(train.get("epochs", 1))
    steps = sgd_steps_from_config(cfg, epochs)
    seeds = len(grid.get("seed") or []) or int((cfg.get("verify") or {}).get("seeds", 1))
    widths = grid.get("width") or []
    loss = LOSS_NAMES.get(trainer.get("loss", "mse"), trainer.get("loss"))
    span = f"widths {min(widths)}–{max(widths)}" if widths else ""
    return f"{loss}, {int(steps) if math.isfinite(steps) else '?'} SGD steps, {seeds} seed{'s' * (seeds > 1)}, {span}"


SHORT = {"inference_steps": "T", "depth": "L", "gamma_bar_L": "γ̄_L"}


def _label(g: dict, keys: list[str]) -> str:
    """``pc T=20 γ̄_L=-1.0``: the algorithm, then every other key that names the group (T for PC only)."""
    parts = [str(g["algorithm"])]
    for k in keys:
        if k in ("algorithm", "parametrization") or (k == "inference_steps" and g["algorithm"] != "pc"):
            continue
        if str(g[k]) == "-":  # a key of another study in a stacked table (analysis.crossed): not this group's
            continue
        if k == "sequential_inference":  # PC's schedule by name
            parts.append("single shot" if str(g[k]) == "True" else "parallel")
            continue
        parts.append(f"{SHORT.get(k, k)}={g[k]}")
    return " ".join(parts)


def _study_evidence(label: str, summary: dict, cfg: dict) -> tuple[str, dict]:
    """One study's line of evidence and its counts of μP verdicts and SP controls."""
    keys = summary["group_keys"]
    mup = [g for g in summary["groups"] if g.get("parametrization") == "mup"]
    sp = [g for g in summary["groups"] if g.get("parametrization") == "sp"]
    counts = {"transfers": 0, "drifts": 0, "inconclusive": 0}
    parts = []
    for g in mup:
        counts[g["verdict"]] += 1
        parts.append(f"{_label(g, keys)} `{g['verdict']}` (k {_num(g['drift_exponent'], '+.2f')})")
    sp_drift = sum(g["verdict"] == "drifts" for g in sp)
    control = f"SP drifts in {sp_drift} of {len(sp)}" if sp else "no SP control"
    text = f"**{label}** ({_setting(cfg)}): μP " + "; ".join(parts) + f"; {control}"
    return text, {**counts, "sp": len(sp), "sp_drifts": sp_drift}


def _answer(counts: dict) -> str:
    n = counts["transfers"] + counts["drifts"] + counts["inconclusive"]
    if counts["sp"] == 0 or n == 0:
        return "**undecided** (no seeded study with its SP control)"
    if counts["transfers"] == n:
        word = "yes"
    elif counts["transfers"]:
        word = "partly"
    elif counts["drifts"]:
        word = "not shown"
    else:
        word = "undecided"
    return (
        f"**{word}**: μP `transfers` in {counts['transfers']} of {n} groups, `drifts` in {counts['drifts']}, "
        f"`inconclusive` in {counts['inconclusive']}; SP drifts in {counts['sp_drifts']} of {counts['sp']}"
    )


def crossed_table(docs: Path) -> pd.DataFrame | None:
    """The committed crossed studies read at :data:`CROSSED_STEPS` (None when none is committed)."""
    dirs = [docs / s for s in CROSSED_STUDIES if (docs / s / "trials.parquet").exists()]
    return crossed(dirs, CROSSED_STEPS, over_time=False)[0] if dirs else None


def crossed_block(table: pd.DataFrame | None) -> str:
    """The crossed table for RESULTS.md (the same text as ``python -m analysis.crossed``'s crossed.md)."""
    if table is None or table.empty:
        return "(no crossed study is committed yet)\n"
    return crossed_markdown(table)


def _crossed_rows(table: pd.DataFrame) -> list[str]:
    """One claims row per loss of the crossed design: the answer at each length, and its evidence."""
    keys = [k for k in table.attrs.get("keys", []) if k != "loss"]
    rows = []
    for loss, t in table.groupby("loss", sort=True):
        seeds = int(t.n_seeds.min())
        answers, evidence = [], []
        for _target, at in t.groupby("target_steps", sort=True):
            mup, sp = at[at.parametrization == "mup"], at[at.parametrization == "sp"]
            counts = {v: int((mup.verdict == v).sum()) for v in ("transfers", "drifts", "inconclusive")}
            counts.update(sp=len(sp), sp_drifts=int((sp.verdict == "drifts").sum()))
            if seeds < 3:  # as the other claims: fewer than 3 seeds decide nothing
                counts["sp"] = 0
            steps = f"{float(at.sgd_steps.median()):.0f}"
            answers.append(f"at {steps} updates: {_answer(counts)}")
            parts = [
                f"{_label(g, keys)} `{g['verdict']}` (k {_num(g['drift_exponent'], '+.2f')} "
                f"[{_num(g['drift_lo'], '+.2f')}, {_num(g['drift_hi'], '+.2f')}])"
                for g in mup.to_dict("records")
            ]
            evidence.append(
                f"**{steps} updates**: μP " + "; ".join(parts) + f"; SP drifts in {counts['sp_drifts']} of {len(sp)}"
            )
        name = LOSS_NAMES.get(str(loss), str(loss))
        claim = (
            f"μP transfers where SP does not, as training gets longer ({name}; crossed design: batch 128, "
            f"{seeds} seeds or more, studies {', '.join(sorted(t.study.unique()))})"
        )
        rows.append(f"| {claim} | " + "<br>".join(answers) + " | " + "<br>".join(evidence) + " |")
    return rows


def claims_block(docs: Path, crossed_t: pd.DataFrame | None = None) -> str:
    """The table of the transfer claims, every verdict and step count read from the committed studies
    (``crossed_t``: :func:`crossed_table`'s, whose rows come first)."""
    lines = ["| claim of the paper | reproduced? (seeded studies with an SP control) | evidence |", "|---|---|---|"]
    if crossed_t is not None and not crossed_t.empty:
        lines += _crossed_rows(crossed_t)
    for claim, studies in CLAIMS:
        total = {"transfers": 0, "drifts": 0, "inconclusive": 0, "sp": 0, "sp_drifts": 0}
        evidence = []
        for label, study, _ in studies:
            summary = json.loads((docs / study / "report" / "summary.json").read_text())
            text, counts = _study_evidence(label, summary, read_sweep_yaml(docs / study))
            evidence.append(text)
            if counts["sp"] and min(g["n_seeds"] for g in summary["groups"]) >= 3:
                for key in total:
                    total[key] += counts[key]
        lines.append(f"| {claim} | {_answer(total)} | " + "<br>".join(evidence) + " |")
    return "\n".join(lines) + "\n"


def _replace(text: str, begin: str, end: str, body: str) -> str:
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}"


def render(docs: Path) -> str:
    """RESULTS.md with every generated block rewritten from the committed data."""
    text = (docs / "RESULTS.md").read_text()
    for summary_path in sorted(docs.glob("*/report/summary.json")):
        study = summary_path.parent.parent.name
        begin = f"<!-- {study} verdicts -->"
        if begin in text:
            text = _replace(text, begin, "<!-- end -->", verdict_block(json.loads(summary_path.read_text())))
        if (begin := f"<!-- {study} accuracy -->") in text:
            keys = json.loads(summary_path.read_text())["group_keys"]
            trials = pd.read_parquet(summary_path.parent.parent / "trials.parquet")
            text = _replace(text, begin, "<!-- end -->", accuracy_block(trials, keys))
        if (begin := f"<!-- {study} at steps -->") in text:
            steps = pd.read_parquet(summary_path.parent / "k_at_steps.parquet")
            no_pc = "pc" not in set(steps.get("algorithm", pd.Series(dtype=str)).astype(str))
            keys = [
                k for k in json.loads(summary_path.read_text())["group_keys"] if not (no_pc and k == "inference_steps")
            ]
            text = _replace(text, begin, "<!-- end -->", steps_block(steps, keys))
    table = crossed_table(docs)
    if "<!-- crossed -->" in text:
        text = _replace(text, "<!-- crossed -->", "<!-- end crossed -->", crossed_block(table))
    if "<!-- claims -->" in text:
        text = _replace(text, "<!-- claims -->", "<!-- end claims -->", claims_block(docs, table))
    if "<!-- fixed-width claims -->" in text:
        text = _replace(text, "<!-- fixed-width claims -->", "<!-- end fixed-width claims -->", fixed_width_block(docs))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", default="docs", help="the docs directory (default docs)")
    args = p.parse_args(argv)
    docs = Path(args.docs)
    (docs / "RESULTS.md").write_text(render(docs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
