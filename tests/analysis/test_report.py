"""analysis.report and analysis.plots: files as docs/ARCHITECTURE.md names them, PNGs that open and show curves."""

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from analysis.load import load_sweep
from analysis.report import write_report
from analysis.transfer import analyze

PNGS = ("loss_vs_lr.png", "lr_star_vs_width.png", "k_over_time.png", "learning_curves.png")


def _report(planted_dir):
    logs = load_sweep(planted_dir)
    result = analyze(logs.trials)
    return logs, result, write_report(result, planted_dir / "report", logs)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the four planted groups, written once for the module (3-8 s: three figures)."""
    from analysis.io import write_parquet_atomic
    from analysis.planted import planted_trials

    d = tmp_path_factory.mktemp("results") / "planted"
    groups = (("bp", "mup", 0.0), ("bp", "sp", -1.0), ("pc", "mup", 0.0), ("pc", "sp", -0.5))
    parts = [planted_trials(k, algorithm=a, parametrization=p, rng_seed=i) for i, (a, p, k) in enumerate(groups)]
    write_parquet_atomic(pd.concat([t for t, _ in parts]), d / "trials.parquet")
    write_parquet_atomic(pd.concat([h for _, h in parts]), d / "history.parquet")
    return _report(d)


@pytest.fixture
def small_dir(tmp_path):
    """A one-group sweep: two widths, five learning rates, one seed (a fast report)."""
    from analysis.io import write_parquet_atomic
    from analysis.planted import planted_trials

    d = tmp_path / "small"
    trials, history = planted_trials(0.0, widths=(64, 128), log2_lrs=range(-6, -1), seeds=(0,))
    write_parquet_atomic(trials, d / "trials.parquet")
    write_parquet_atomic(history, d / "history.parquet")
    return d


def _colored_fraction(img: np.ndarray) -> float:
    """Fraction of pixels that are clearly coloured (not grey/white/black): the curves."""
    rgb = img[..., :3]
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).mean())


def test_report_files_pngs_and_references(report):
    logs, result, out = report
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for name in PNGS:
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert _colored_fraction(img) > 0.005, name  # coloured curves drawn, not an empty frame
        assert f"]({name})" in md
    assert html.count("data:image/png;base64,") == len(PNGS)
    # one curve per width per panel: each width's colour appears in the loss-vs-lr figure
    assert "transfers" in md and "drifts" in md and "| width |" not in md.split("## Per width")[0]


def test_summary_parquet_and_json_follow_the_contract(report):
    logs, result, out = report
    summary = pd.read_parquet(out / "summary.parquet")
    for col in (
        "algorithm",
        "parametrization",
        "inference_steps",
        "width",
        "lr_star",
        "lr_star_lo",
        "lr_star_hi",
        "best_loss",
        "regret",
    ):
        assert col in summary.columns
    assert len(summary) == 4 * 5  # 4 groups x 5 widths
    data = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN/Infinity tokens
    assert len(data["groups"]) == 4
    verdicts = {(g["algorithm"], g["parametrization"]): g["verdict"] for g in data["groups"]}
    assert verdicts == {
        ("bp", "mup"): "transfers",
        ("bp", "sp"): "drifts",
        ("pc", "mup"): "transfers",
        ("pc", "sp"): "drifts",
    }
    for g in data["groups"]:
        assert {"drift_exponent", "drift_lo", "drift_hi", "max_regret", "verdict"} <= set(g)
    k = {(g["algorithm"], g["parametrization"]): g["drift_exponent"] for g in data["groups"]}
    assert k[("pc", "sp")] == pytest.approx(-0.5, abs=0.05)
    assert data["thresholds"] == {"max_drift": 0.2, "max_regret": 0.05}
    for col in ("excess_regret", "excess_lo", "excess_hi", "n_censored", "n_diverged_at_base"):
        assert col in summary.columns


def test_rewriting_the_report_replaces_it_whole(small_dir):
    _, _, out = _report(small_dir)
    (out / "stale.txt").write_text("old")
    _report(small_dir)
    assert not (out / "stale.txt").exists() and (out / "report.md").exists()
    assert not [p for p in small_dir.iterdir() if p.name.startswith(".report")]


def test_no_history_no_learning_curves(small_dir):
    (small_dir / "history.parquet").unlink()
    _, _, out = _report(small_dir)
    assert not (out / "learning_curves.png").exists()
    md = (out / "report.md").read_text()
    assert "learning_curves.png" not in md
    assert "η* over training time" not in md and not (out / "k_over_time.parquet").exists()


def test_k_over_time_section_and_table_with_two_epochs_or_more(small_dir):
    """Three epochs of history: the section, its figure and k_over_time.parquet (one row per group and
    epoch); the same sweep with one epoch of history: none of them."""
    _, result, out = _report(small_dir)
    md = (out / "report.md").read_text()
    assert "## η* over training time" in md and "](k_over_time.png)" in md
    table = pd.read_parquet(out / "k_over_time.parquet")
    assert sorted(table.epoch) == [1, 2, 3] and {"sgd_steps", "drift_exponent", "drift_lo", "verdict"} <= set(table)
    assert table.sgd_steps.tolist() == [15, 30, 45]  # planted: 15 steps per epoch
    section = md.split("## η* over training time")[1].split("## Per width")[0]
    assert "| epoch | sgd_steps | k [95% interval] | verdict |" in section

    history = pd.read_parquet(small_dir / "history.parquet")
    from analysis.io import write_parquet_atomic

    write_parquet_atomic(history[history.epoch == 1], small_dir / "history.parquet")
    _, _, out = _report(small_dir)
    md = (out / "report.md").read_text()
    assert "η* over training time" not in md and "](k_over_time.png)" not in md
    assert not (out / "k_over_time.parquet").exists() and not (out / "k_over_time.png").exists()


@pytest.fixture
def disagreeing_dir(tmp_path):
    """BP μP (k = 0) and BP SP (k = −1) whose μP test loss is that of a k = −1 group: the objective
    (train loss) transfers, the held-out test loss drifts."""
    from analysis.io import write_parquet_atomic
    from analysis.planted import planted_trials

    d = tmp_path / "results" / "disagree"
    kw = {"widths": (64, 128, 256), "log2_lrs": range(-9, 1), "name": "disagree"}
    mup, mup_h = planted_trials(0.0, parametrization="mup", rng_seed=0, **kw)
    sp, sp_h = planted_trials(-1.0, parametrization="sp", rng_seed=1, **kw)
    drifting, _ = planted_trials(-1.0, parametrization="mup", rng_seed=2, **kw)  # the same grid, row for row
    mup["final_test_loss"] = drifting["final_train_loss"].to_numpy() * 1.1
    write_parquet_atomic(pd.concat([mup, sp]), d / "trials.parquet")
    write_parquet_atomic(pd.concat([mup_h, sp_h]), d / "history.parquet")
    (d / "sweep.yaml").write_text(
        "name: disagree\nobjective: {metric: final_train_loss, mode: min}\nverify: {max_drift: 0.2, max_regret: 0.05}\n"
    )
    return d


def test_held_out_column_and_disagreement_sentence(disagreeing_dir):
    from dataclasses import replace

    from analysis.report import held_out_disagreements, verdict_table
    from analysis.transfer import analyze_logs

    logs = load_sweep(disagreeing_dir)
    result = analyze_logs(logs)
    verdicts = dict(zip(result.groups.parametrization, result.groups.verdict))
    held = dict(zip(result.groups.parametrization, result.groups.held_out_verdict))
    assert verdicts == {"mup": "transfers", "sp": "drifts"} and held["mup"] == "drifts", result.groups
    assert held_out_disagreements(result) == ["BP μP: transfers on final_train_loss, drifts on final_test_loss"]

    table = verdict_table(result)
    assert list(table.columns[-2:]) == ["held-out (test loss)", "verdict"]
    assert {"k [95% interval]", "excess regret [95%]", "base regret"} <= set(table.columns)
    assert table["held-out (test loss)"].iloc[0].startswith("drifts, k -")
    assert "k [98.3% interval]" in verdict_table(replace(result, level=1 - 0.05 / 3)).columns

    out = write_report(result, disagreeing_dir / "report", logs)
    md = (out / "report.md").read_text()
    verdicts_section = md.split("## Verdicts")[1].split("## Loss against")[0]
    assert "| held-out (test loss) | verdict |" in verdicts_section
    assert "BP μP: transfers on final_train_loss, drifts on final_test_loss" in verdicts_section
    assert "bootstrap" not in md and "Bonferroni" in md and "jackknife" in md and "censored" in md
    data = json.loads((out / "summary.json").read_text())
    assert data["level"] == 0.95 and data["held_out"] == {"metric": "final_test_loss", "mode": "min"}
    g = {x["parametrization"]: x for x in data["groups"]}
    assert g["mup"]["held_out_verdict"] == "drifts" and g["mup"]["held_out_metric"] == "final_test_loss"
    assert {"base_regret", "censored_widths", "level", "own_verdict"} <= set(g["mup"])
    assert {"excess_regret", "excess_lo", "excess_hi", "n_censored"} <= set(data["per_width"][0])


def test_no_disagreement_no_sentence(small_dir):
    from analysis.report import held_out_line
    from analysis.transfer import analyze_logs

    result = analyze_logs(load_sweep(small_dir))
    assert result.held_out is not None and held_out_line(result) is None


@pytest.mark.slow
def test_report_is_logged_to_the_sweep_parent_run(small_dir, tmp_path):
    """About 15-35 s (MLflow's SQLite schema set-up). A store whose experiment keeps artifacts by
    file path (as before mlflow-artifacts:/): the report goes there; the verdicts go to the run."""
    from mlflow.tracking import MlflowClient

    from orchestrator.stores.tracking import log_report

    _, _, out = _report(small_dir)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("planted", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(
        exp, run_name="planted", tags={"mutransfer.role": "sweep", "mutransfer.sweep": "planted"}
    )
    client.create_run(
        exp,
        run_name="t1",
        tags={"mutransfer.role": "trial", "mutransfer.sweep": "planted", "mlflow.parentRunId": parent.info.run_id},
    )
    assert log_report(out, uri, "planted", "planted") == parent.info.run_id
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/summary.json", "report/loss_vs_lr.png"} <= names
    run = client.get_run(parent.info.run_id)
    summary = json.loads((out / "summary.json").read_text())
    for g in summary["groups"]:
        label = "-".join(
            [g["algorithm"], g["parametrization"]] + ([f"T{g['inference_steps']}"] if g["algorithm"] == "pc" else [])
        )
        assert run.data.tags[f"verdict/{label}"] == g["verdict"]
        assert f"| {label} |" in run.data.tags["mlflow.note.content"]
    assert log_report(out, uri, "other", "other") is None


SETUP_YAML = """name: setup
trainer: {optimizer: sgd, loss: ce, depth: 3, activation: tanh, base_width: 64, inference_steps: 20,
  inference_lr: 0.1, feedback_lr: 0.01, target_step: 0.1}
grid: {algorithm: [bp, pc], parametrization: [sp, mup], width: [64, 128], seed: [0, 1, 2],
  lr: {log2: [-6, -2, 1]}}
data: {dataset: fmnist7, subset: 2000, test_subset: 500}
train: {epochs: 3, batch_size: 64}
objective: {metric: final_train_loss, mode: min}
verify: {max_drift: 0.2, max_regret: 0.05}
"""


@pytest.fixture(scope="module")
def setup_report(tmp_path_factory):
    """BP and PC (T = 20) under SP and μP, three seeds, with a sweep.yaml: the report and its config."""
    from analysis.io import write_parquet_atomic
    from analysis.load import read_sweep_yaml
    from analysis.planted import planted_trials
    from analysis.transfer import analyze_logs

    d = tmp_path_factory.mktemp("results") / "setup"
    groups = (("bp", "mup", 0.0), ("bp", "sp", -1.0), ("pc", "mup", 0.0), ("pc", "sp", -1.0))
    kw = {"widths": (64, 128), "log2_lrs": range(-6, -1), "seeds": (0, 1, 2), "name": "setup"}
    parts = [planted_trials(k, algorithm=a, parametrization=p, rng_seed=i, **kw) for i, (a, p, k) in enumerate(groups)]
    trials = pd.concat([t for t, _ in parts]).assign(dataset="fmnist7")
    write_parquet_atomic(trials, d / "trials.parquet")
    write_parquet_atomic(pd.concat([h for _, h in parts]), d / "history.parquet")
    (d / "sweep.yaml").write_text(SETUP_YAML)
    logs = load_sweep(d)
    result = analyze_logs(logs)
    out = write_report(result, d / "report", logs, formats=("png",), dpi=60, sweep_cfg=read_sweep_yaml(d))
    return result, out


def _section(md: str, head: str) -> str:
    return md.split(f"## {head}\n")[1].split("\n## ")[0]


def test_setup_section_names_what_was_trained_from_the_config(setup_report):
    _, out = setup_report
    md = (out / "report.md").read_text()
    rows = dict(
        ln.strip("|").split(" | ", 1)
        for ln in _section(md, "Setup").splitlines()
        if ln.startswith("| ") and "---" not in ln
    )
    rows = {k.strip(): v.strip(" |") for k, v in rows.items()}
    assert rows["data"] == "fmnist7; training subset 2000 (2000 examples), test subset 500"
    assert rows["inputs → outputs"] == "49 → 10 classes"
    assert rows["model"].startswith("mlp, depth 3") and rows["model"].endswith("tanh")
    assert rows["widths"] == "64, 128" and rows["base width"] == "64"
    assert rows["optimizer"] == "sgd" and rows["loss"] == "ce" and rows["epochs, batch size"] == "3, 64"
    assert rows["SGD steps per trial"] == "45"  # planted history: 15 steps per epoch, 3 epochs
    assert rows["seeds"] == "3 (0, 1, 2)"
    assert rows["learning rates"].startswith("grid 2^-6 to 2^-2 in steps of 1 octave(s); 5 distinct rates")
    assert rows["parametrizations"] == "SP, μP"
    assert rows["algorithm BP"] == "no keys of its own"
    assert rows["algorithm PC"] == "inference_steps 20; inference_lr 0.1"
    assert rows["objective"].startswith("min final_train_loss")


def test_conclusions_one_line_per_group_and_overall(setup_report):
    """One line overall (μP first, each verdict with its groups) and one per group, from the verdicts."""
    result, out = setup_report
    md = (out / "report.md").read_text()
    head = md.split("## Setup")[0]
    (overall,) = [ln for ln in head.splitlines() if ln.startswith("Conclusion: ")]
    v = {(a, p): x for a, p, x in zip(result.groups.algorithm, result.groups.parametrization, result.groups.verdict)}
    assert overall.startswith("Conclusion: μP ") and ". SP " in overall
    for (a, p), x in v.items():
        label = f"{a.upper()} {'μP' if p == 'mup' else 'SP'}" + (" T=20" if a == "pc" else "")
        words = {"transfers": "η* transfers across widths", "drifts": "η* drifts with width"}.get(x, x)
        assert any(ln.startswith(f"- {label}: {words}, k = ") for ln in head.splitlines()), (label, head)
    assert v[("pc", "sp")] == "drifts" and "SP drifts for BP, PC T=20." in overall


def test_keys_only_where_the_algorithm_reads_them(setup_report):
    """inference_steps is empty on BP rows, 20 on PC rows, in every table that has it."""
    _, out = setup_report
    md = (out / "report.md").read_text()
    tables = [ln for ln in md.splitlines() if ln.startswith("| bp |") or ln.startswith("| pc |")]
    assert tables
    for ln in tables:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert cells[2] == ("" if cells[0] == "bp" else "20"), ln


def test_numbers_at_three_significant_figures(setup_report):
    """No number in the report's tables has more than 3 significant digits (widths, counts and steps aside)."""
    import re

    _, out = setup_report
    md = (out / "report.md").read_text()
    for ln in md.splitlines():
        if not ln.startswith("| bp |") and not ln.startswith("| pc |"):
            continue
        for num in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", ln):
            digits = num.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
            assert len(digits) <= 3, (num, ln)


def test_html_has_no_markup_leaks(setup_report):
    """The page's rendered text (tags stripped, entities resolved) holds no backtick, ** or ![; `code` is <code>."""
    from html.parser import HTMLParser

    _, out = setup_report
    page = (out / "report.html").read_text()

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.parts.append(data)

    p = Text()
    p.feed(page)
    text = "".join(p.parts)
    assert "`" not in text and "**" not in text and "![" not in text
    assert "code" in p.tags and "<code>transfers</code>" in page


def test_infinite_regret_is_explained_where_it_appears():
    from analysis.report_setup import INF_TEXT, has_inf

    assert has_inf(pd.DataFrame({"r": [0.1, np.inf]})) and has_inf(pd.DataFrame({"r": ["∞ [∞, ∞]"]}))
    assert not has_inf(pd.DataFrame({"r": [0.1, np.nan], "s": ["a", "b"]}))
    assert INF_TEXT.startswith("∞ (regret):")
