"""`mutransfer analyze`: verdict table and report from the logs; exit 2, one line, nothing written on bad input."""

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.io import write_parquet_atomic
from analysis.planted import planted_trials
from orchestrator.cli.main import main


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch):
    """results/small/: BP μP (k = 0) and BP SP (k = −1), three widths, three seeds, no MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    d = tmp_path / "results" / "small"
    parts = [
        planted_trials(
            k,
            parametrization=p,
            widths=(64, 128, 256),
            log2_lrs=range(-9, 1),
            seeds=(0, 1, 2),
            name="small",
            rng_seed=i,
        )
        for i, (p, k) in enumerate((("mup", 0.0), ("sp", -1.0)))
    ]
    write_parquet_atomic(pd.concat([t for t, _ in parts]), d / "trials.parquet")
    write_parquet_atomic(pd.concat([h for _, h in parts]), d / "history.parquet")
    (d / "sweep.yaml").write_text(
        "name: small\nobjective: {metric: final_train_loss, mode: min}\nverify: {max_drift: 0.2, max_regret: 0.05}\n"
    )
    return d


def test_analyze_prints_the_verdicts_and_writes_the_report(sweep_dir, capsys):
    assert main(["analyze", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[1]: ln.split()[-1] for ln in out.splitlines() if ln.split()[:1] == ["bp"]}
    assert rows == {"mup": "transfers", "sp": "drifts"}, out
    for name in (
        "report.md",
        "report.html",
        "summary.parquet",
        "summary.json",
        "loss_vs_lr.png",
        "lr_star_vs_width.png",
        "learning_curves.png",
    ):
        assert (sweep_dir / "report" / name).exists(), name


def test_analyze_prints_the_rule_and_the_held_out_disagreement(sweep_dir, capsys):
    """The μP group's test loss made to drift (k = −1): the objective transfers, the held-out metric drifts."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    drifting, _ = planted_trials(-1.0, widths=(64, 128, 256), log2_lrs=range(-9, 1), name="small", rng_seed=5)
    mup = (trials.parametrization == "mup").to_numpy()
    trials.loc[mup, "final_test_loss"] = drifting["final_train_loss"].to_numpy() * 1.1  # the same grid, row for row
    write_parquet_atomic(trials, sweep_dir / "trials.parquet")
    assert main(["analyze", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "excess regret over the base width's" in out and "edge-limited eta* never transfers" in out
    assert "k's 95% interval" in out and "bootstrap" not in out
    assert "disagrees with the objective for: BP μP: transfers on final_train_loss, drifts on final_test_loss" in out
    assert "Conclusion: μP transfers for BP. SP drifts for BP." in out
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "held-out (test loss)" in md and (sweep_dir / "report" / "k_over_time.parquet").exists()


def test_no_disagreement_no_line(sweep_dir, capsys):
    assert main(["analyze", str(sweep_dir)]) == 0
    assert "disagrees with the objective" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--metric", "final_trian_loss"], "final_train_loss"),
        (["--mode", "biggest"], "--mode"),
        (["--dpi", "5"], "--dpi"),
        (["--formats", "png,jpeg"], "--formats"),
        (["--formats", ","], "--formats"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(sweep_dir, capsys, argv, match):
    assert main(["analyze", str(sweep_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err
    assert not (sweep_dir / "report").exists()


def test_bad_sweep_yaml_exits_2(sweep_dir, capsys):
    (sweep_dir / "sweep.yaml").write_text("verify: {max_regret: -1}\n")
    assert main(["analyze", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "verify.max_regret" in err and err.count("\n") == 1
    assert not (sweep_dir / "report").exists()


def test_not_a_results_directory_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "not a sweep's results directory" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


def test_the_results_root_points_to_its_sweeps(sweep_dir, capsys):
    assert main(["analyze", str(sweep_dir.parent)]) == 2
    err = capsys.readouterr().err
    assert f"pass {sweep_dir}" in err and err.count("\n") == 1
    assert not (sweep_dir.parent / "report").exists()


def test_formats_in_any_order_and_pdf_alone_write_png_too(sweep_dir, capsys):
    """--formats pdf: the PNGs (report.html embeds them) and PDF copies, no SVG; svg,png is png,svg."""
    import argparse

    from orchestrator.cli.cmd_analyze import figure_options

    assert figure_options(argparse.Namespace(dpi=None, formats="svg,png"))[1] == ("png", "svg")
    assert figure_options(argparse.Namespace(dpi=None, formats="pdf,png,pdf"))[1] == ("png", "pdf")
    assert main(["analyze", str(sweep_dir), "--formats", "pdf", "--dpi", "60"]) == 0
    report = sweep_dir / "report"
    assert (report / "lr_star_vs_width.png").is_file() and (report / "lr_star_vs_width.pdf").is_file()
    assert not (report / "lr_star_vs_width.svg").exists()


def test_notes_say_what_to_do(sweep_dir, capsys):
    """One seed: the note says to rerun with three seeds or more."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    write_parquet_atomic(trials[trials.seed == 0], sweep_dir / "trials.parquet")
    assert main(["analyze", str(sweep_dir), "--dpi", "60"]) == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  note:")]
    assert notes and all("rerun with three seeds or more" in n for n in notes if "one seed" in n), notes


# ---- several sweeps: mutransfer analyze A B ... --out DIR ------------------------------------
DOCS = Path(__file__).resolve().parents[3] / "docs"
E2, E10 = DOCS / "paper_mlp_pool_cpu", DOCS / "paper_mlp_pool_e10_cpu"  # the same sweep at 2 and 10 epochs


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_analyze_two_committed_studies_writes_one_comparison(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = {d: _listing(d) for d in (E2, E10)}
    out = tmp_path / "cmp"
    assert main(["analyze", str(E2), str(E10), "--out", str(out), "--dpi", "40", "--formats", "png"]) == 0
    text = capsys.readouterr().out
    assert {_listing(d) == before[d] for d in (E2, E10)} == {True}  # nothing written beside the inputs
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.json",
        "comparison.parquet",
        "lr_star_compare.png",
        "report.html",
        "report.md",
    ]
    table = pd.read_parquet(out / "comparison.parquet")
    for d in (E2, E10):  # one row per group of each sweep, its verdicts as its own summary.json's
        groups = json.loads((d / "report" / "summary.json").read_text())["groups"]
        got = table[table.sweep == d.name].sort_values(["algorithm", "parametrization"])
        want = sorted(groups, key=lambda g: (g["algorithm"], g["parametrization"]))
        assert list(got.verdict) == [g["verdict"] for g in want], d
    assert "setup differences: train.epochs" in text and "share no trial id" in text
    md = (out / "report.md").read_text()
    assert "| train.epochs | setup | 2 | 10 |" in md and "![" in md
    lines = text.rstrip().splitlines()
    assert lines[-3:] == [
        f"next: open {out / 'report.html'}",
        f"next: mutransfer analyze {E2}   # {E2.name}'s own report: every width, plots, notes",
        f"next: mutransfer analyze {E10}   # {E10.name}'s own report: every width, plots, notes",
    ]


def test_sweeps_that_share_trials_are_said_to_overlap(sweep_dir, tmp_path, capsys):
    """A copy of the sweep with its seed-0 trials: the same trial ids, counted, each sweep analysed alone."""
    other = tmp_path / "results" / "other"
    other.mkdir()
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    history = pd.read_parquet(sweep_dir / "history.parquet")
    seed0 = trials[trials.seed == 0]
    write_parquet_atomic(seed0, other / "trials.parquet")
    write_parquet_atomic(history[history.trial_id.isin(seed0.trial_id)], other / "history.parquet")
    (other / "sweep.yaml").write_text((sweep_dir / "sweep.yaml").read_text().replace("name: small", "name: other"))
    out = tmp_path / "cmp"
    assert main(["analyze", str(sweep_dir), str(other), "--out", str(out), "--dpi", "40", "--formats", "png"]) == 0
    text = capsys.readouterr().out
    assert f"small and other share {len(seed0)} trial ids" in text and "not merged" in text
    assert f"share {len(seed0)} trial ids" in (out / "report.md").read_text()
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["overlaps"] == [{"a": "small", "b": "other", "shared_trial_ids": len(seed0)}]
    assert "setup differences: none" in text
    # an earlier comparison may be replaced (here by the sweeps in the other order)
    assert main(["analyze", str(other), str(sweep_dir), "--out", str(out), "--dpi", "40", "--formats", "png"]) == 0
    assert pd.read_parquet(out / "comparison.parquet").sweep.iloc[0] == "other"
    assert not list(out.parent.glob(".cmp.*"))  # no temporary or old directory left beside it


@pytest.mark.parametrize(
    "case, match",
    [
        ("not_a_sweep", "not a sweep's results directory"),
        ("missing", "no such directory"),
        ("twice", "given twice"),
        ("no_out", "--out is required"),
        ("out_inside", "lies inside the sweep directory"),
        ("out_holds", "holds the sweep directory"),
        ("out_not_comparison", "is not an earlier comparison"),
    ],
)
def test_bad_comparisons_exit_2_with_one_line_and_write_nothing(sweep_dir, tmp_path, capsys, case, match):
    empty = tmp_path / "empty"
    empty.mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    other, out = str(E2), str(tmp_path / "cmp")
    argv = {
        "not_a_sweep": [str(sweep_dir), str(empty), "--out", out],
        "missing": [str(sweep_dir), str(tmp_path / "nope"), "--out", out],
        "twice": [str(sweep_dir), str(sweep_dir) + "/", "--out", out],
        "no_out": [str(sweep_dir), other],
        "out_inside": [str(sweep_dir), other, "--out", str(sweep_dir / "cmp")],
        "out_holds": [str(sweep_dir), other, "--out", str(tmp_path)],
        "out_not_comparison": [str(sweep_dir), other, "--out", str(busy)],
    }[case]
    before = _listing(tmp_path)
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err, err
    named = {"not_a_sweep": empty, "missing": tmp_path / "nope", "out_inside": sweep_dir / "cmp", "out_holds": tmp_path}
    assert str(named.get(case, "")) in err
    assert _listing(tmp_path) == before  # nothing written, the busy directory kept


def test_help_explains_the_comparison(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "analyze A B [C ...] --out DIR" in text and "comparison" in text


def test_one_sweep_into_a_comparison_exits_2(sweep_dir, tmp_path, capsys):
    """Fewer than two sweeps with --out an earlier comparison: one line, the comparison kept."""
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.json").write_text("{}\n")
    assert main(["analyze", str(sweep_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out}: holds a comparison of several sweeps" in err
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json"] and not (sweep_dir / "report").exists()


def test_a_comparison_is_logged_to_the_first_sweeps_mlflow_store(sweep_dir, tmp_path, capsys):
    """With a store beside the sweeps: one run of the `comparisons` experiment; --no-mlflow: none (a few s)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{sweep_dir.parent / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # creates the store
    other = tmp_path / "results" / "other"
    other.mkdir()
    for name in ("trials.parquet", "history.parquet"):
        (other / name).write_bytes((sweep_dir / name).read_bytes())
    (other / "sweep.yaml").write_text((sweep_dir / "sweep.yaml").read_text().replace("name: small", "name: other"))
    out = tmp_path / "cmp"
    argv = ["analyze", str(sweep_dir), str(other), "--out", str(out), "--dpi", "40", "--formats", "png"]
    assert main([*argv, "--no-mlflow"]) == 0
    assert "comparison logged" not in capsys.readouterr().out and client.get_experiment_by_name("comparisons") is None
    assert main(argv) == 0
    text = capsys.readouterr().out
    exp = client.get_experiment_by_name("comparisons")
    (run,) = client.search_runs([exp.experiment_id])
    assert f"experiment 'comparisons'): comparison logged to run {run.info.run_id}" in text
    assert run.data.tags["mutransfer.sweeps"] == f"{sweep_dir}, {other}"
