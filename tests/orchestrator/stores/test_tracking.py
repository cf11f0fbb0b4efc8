"""MLflow tracking: nested runs per trial, back-fill from Parquet, and an unreachable server."""

import socket
import time

import pandas as pd
import pytest

from orchestrator.stores.results_store import trial_row
from orchestrator.stores.tracking import Tracker, default_tracking_uri


def _spec(tid, lr):
    return {
        "trial_id": tid,
        "trainer": {
            "algorithm": "bp",
            "parametrization": "mup",
            "optimizer": "sgd",
            "model": "mlp",
            "width": 32,
            "base_width": 16,
            "depth": 3,
            "lr": lr,
            "inference_steps": 20,
            "seed": 0,
        },
        "data": {"dataset": "fmnist", "subset": 100},
        "train": {"epochs": 2},
        "swept": ["lr"],
    }


def _hist(n):
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "test_loss": 2.0 / e,
            "test_acc": 0.1 * e,
            "wall_s": float(e),
            "sgd_steps": 3 * e,
        }
        for e in range(1, n + 1)
    ]


@pytest.fixture(scope="module")
def _empty_store(tmp_path_factory):
    """A new SQLite tracking store with MLflow's tables, created once (its migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_uri(tmp_path, _empty_store):
    """A fresh copy of the empty store at ``tmp_path/mlflow.db``."""
    import shutil

    shutil.copy(_empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_default_uri_prefers_config_then_environment_then_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://x:1")
    assert default_tracking_uri(tmp_path) == "http://x:1"
    assert default_tracking_uri(tmp_path, "sqlite:///y.db") == "sqlite:///y.db"


def test_unreachable_server_turns_tracking_off_quickly(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    tr = Tracker(f"http://127.0.0.1:{port}", "s")
    assert tr.start() is False
    tr.log_trial(trial_row("s", _spec("a", 0.1), _hist(1), "ok"), _spec("a", 0.1), _hist(1))  # a no-op
    assert time.time() - t0 < 30
    err = capsys.readouterr().err
    assert err.count("unreachable") == 1 and "mutransfer sync" in err


def test_a_background_start_is_waited_for_by_the_first_call_that_needs_it(capsys):
    """start(background=True) returns at once; `enabled` (asked by every call) waits for the outcome."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tr = Tracker(f"http://127.0.0.1:{port}", "s")
    assert tr.start(background=True) is True and tr._starter is not None
    tr.log_trial(trial_row("s", _spec("a", 0.1), _hist(1), "ok"), _spec("a", 0.1), _hist(1))  # waits, then a no-op
    assert tr._starter is None and tr.enabled is False and tr.logged == 0
    err = capsys.readouterr().err
    assert err.count("unreachable") == 1


@pytest.mark.slow
def test_a_background_start_creates_the_store_and_logs_after_it(tmp_path, sqlite_uri):
    tr = Tracker(sqlite_uri, "s", artifact_root=tmp_path / "art")
    assert tr.start(background=True)
    tr.log_trial(trial_row("s", _spec("a", 0.1), _hist(2), "ok"), _spec("a", 0.1), _hist(2))
    assert tr.enabled and tr.logged == 1 and tr.parent_id is not None


@pytest.mark.slow
def test_nested_runs_back_fill_and_half_logged_runs(tmp_path, sqlite_uri):
    """A few seconds on a copy of the empty store (creating one takes 10-20 s: once per module)."""
    from mlflow.tracking import MlflowClient

    uri = sqlite_uri
    specs = {t: _spec(t, lr) for t, lr in (("a", 0.1), ("b", 0.2), ("c", 0.4))}
    tr = Tracker(uri, "s", artifact_root=tmp_path / "art")
    assert tr.start()
    tr.log_trial(trial_row("s", specs["a"], _hist(2), "ok"), specs["a"], _hist(2))
    # a run left RUNNING by a driver that died while logging it
    half = tr.client.create_run(
        tr.experiment_id,
        run_name="b",
        tags={
            "mlflow.parentRunId": tr.parent_id,
            "mutransfer.sweep": "s",
            "mutransfer.role": "trial",
            "mutransfer.trial_id": "b",
        },
    )
    tr2 = Tracker(uri, "s", artifact_root=tmp_path / "art")
    assert tr2.start() and set(tr2._logged) == {"a"} and tr2.parent_id == tr.parent_id
    trials = pd.DataFrame([trial_row("s", specs[t], _hist(2), "ok") for t in "abc"])
    hist = pd.DataFrame([{"trial_id": t, **h} for t in "abc" for h in _hist(2)])
    assert tr2.sync(trials, hist, specs) == 2
    assert tr2.sync(trials, hist, specs) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([tr.experiment_id], filter_string="tags.`mutransfer.role` = 'trial'")
    names = {r.data.tags["mutransfer.trial_id"]: r.info.run_name for r in runs}
    assert names == {"a": "bp-mup-w32-lr2^-3.32-s0", "b": "bp-mup-w32-lr2^-2.32-s0", "c": "bp-mup-w32-lr2^-1.32-s0"}
    assert half.info.run_id not in {r.info.run_id for r in runs}
    b = next(r for r in runs if r.data.tags["mutransfer.trial_id"] == "b")
    assert b.data.params["lr"] == "0.2" and b.data.tags["mlflow.parentRunId"] == tr.parent_id
    assert "trial_id" not in b.data.params and b.data.params["log2_lr"] == "-2.3219"
    assert b.data.tags["mutransfer.status"] == "ok" and "status" not in b.data.params
    assert b.data.tags["final_test_loss"] == "1" and b.data.tags["epochs_done"] == "2"  # tags: no charts
    assert set(b.data.metrics) == {"loss", "test_loss", "test_acc", "sgd_steps"}  # the curves only; loss = train_loss
    # a trial that failed and later succeeded: its FAILED run is replaced, not duplicated
    specs["d"] = _spec("d", 0.8)
    tr2.log_trial(trial_row("s", specs["d"], _hist(1), "failed", error="died"), specs["d"], _hist(1))
    tr3 = Tracker(uri, "s")
    assert tr3.start() and tr3._logged["d"][1] == "failed"
    trials = pd.concat([trials, pd.DataFrame([trial_row("s", specs["d"], _hist(2), "ok")])])
    hist = pd.concat([hist, pd.DataFrame([{"trial_id": "d", **h} for h in _hist(2)])])
    assert tr3.sync(trials, hist, specs) == 1
    runs = client.search_runs([tr.experiment_id], filter_string="tags.`mutransfer.role` = 'trial'")
    assert sorted(r.data.tags["mutransfer.trial_id"] for r in runs) == ["a", "b", "c", "d"]
    assert {r.data.tags["mutransfer.status"] for r in runs} == {"ok"}
    assert [m.value for m in sorted(client.get_metric_history(b.info.run_id, "test_loss"), key=lambda m: m.step)] == [
        2.0,
        1.0,
    ]
    steps = sorted(client.get_metric_history(b.info.run_id, "sgd_steps"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in steps] == [(1, 3.0), (2, 6.0)]  # per epoch: a chart's x axis
    assert "sgd_steps" not in client.get_run(b.info.run_id).data.params  # a result, not a param


def test_a_key_that_became_an_axis_joins_the_old_runs_params(tmp_path, sqlite_uri):
    """A study grown by an axis (its rows restated by the results store): sync adds the new param to the runs
    logged before, once, without logging them again (about 1-3 s)."""
    spec = _spec("a", 0.1)
    row = trial_row("s", spec, _hist(2), "ok")
    tr = Tracker(sqlite_uri, "s", artifact_root=tmp_path / "art")
    assert tr.start()
    tr.log_trial(row, spec, _hist(2))
    rid = tr._logged["a"][0]
    assert "activation" not in tr.client.get_run(rid).data.params
    grown = pd.DataFrame([{**row, "activation": "tanh"}])
    hist = pd.DataFrame([{"trial_id": "a", **h} for h in _hist(2)])
    tr2 = Tracker(sqlite_uri, "s", artifact_root=tmp_path / "art")
    assert tr2.start()
    assert tr2.sync(grown, hist, {"a": spec}) == 0  # not logged again
    assert tr2.client.get_run(rid).data.params["activation"] == "tanh"
    assert tr2._logged["a"][0] == rid and "activation" in tr2._param_keys["a"]
    tr2.sync(grown, hist, {"a": spec})  # nothing left to add: no second request
    assert tr2.enabled


def test_group_keys_beyond_algorithm_reach_mlflow_as_metric_and_tag_keys(tmp_path, sqlite_uri):
    """A verify over gamma_bar_L (or any extra key) logs per-group metrics and tags MLflow accepts:
    ``=`` in a key made MLflow refuse the whole batch and turned tracking off (about 1-3 s)."""
    from orchestrator.stores.run_summary import base_summary, verdict_summary

    uri = sqlite_uri
    tr = Tracker(uri, "s", artifact_root=tmp_path / "art")
    assert tr.start()
    group = {"algorithm": "pc", "parametrization": "mup", "inference_steps": 20, "gamma_bar_L": -1.0, "act": "a=b"}
    summary = {
        "group_keys": list(group),
        "groups": [{**group, "drift_exponent": 0.09, "lr_star_base": 0.117, "verdict": "transfers"}],
    }
    _, metrics, tags = verdict_summary(summary, tr.parent_id)
    _, base_metrics, _ = base_summary({"groups": [{"group": group, "best": {"lr": 0.117}, "trials_complete": 8}]})
    tr.describe(metrics={**metrics, **base_metrics}, tags=tags)
    assert tr.enabled
    data = tr.client.get_run(tr.parent_id).data
    assert data.metrics["drift_k/pc-mup-T20-gamma_bar_L:-1.0-act:a_b"] == 0.09
    assert data.metrics["best_lr/pc-mup-T20-gamma_bar_L:-1.0-act:a_b"] == 0.117
    assert data.tags["verdict/pc-mup-T20-gamma_bar_L:-1.0-act:a_b"] == "transfers"


def test_diverged_trial_records_where_it_diverged_and_inf_as_tags(tmp_path, sqlite_uri):
    """About 1-3 s. Epoch 2's row is the diverged one (train_loss ∞, the updates applied before it)."""
    uri = sqlite_uri
    tr = Tracker(uri, "s", artifact_root=tmp_path / "art")
    assert tr.start()
    hist = _hist(1) + [
        {
            "epoch": 2,
            "train_loss": float("inf"),
            "test_loss": float("inf"),
            "test_acc": float("nan"),
            "wall_s": 2.0,
            "sgd_steps": 5,
            "diverged": True,
        }
    ]
    spec = _spec("x", 4.0)
    tr.log_trial(trial_row("s", spec, hist, "diverged"), spec, hist)
    assert tr.enabled
    run = tr.client.get_run(tr._logged["x"][0])
    m, tags = run.data.metrics, run.data.tags
    assert tags["diverged"] == "1" and tags["diverged_at_epoch"] == "2" and tags["diverged_at_step"] == "5"
    assert tags["last_finite_train_loss"] == "1" and tags["epochs_done"] == "2" and tags["wall_s"] == "2"
    assert tags["loss_at_divergence"] == "inf" and tags["final_train_loss"] == "inf" and tags["final_test_acc"] == "nan"
    assert set(m) == {"loss", "test_loss", "test_acc", "sgd_steps"} and run.info.status == "KILLED"
    # summaries at 4 significant figures (Parquet keeps every digit); a failed trial without epochs still
    # gets its params and tags
    spec = _spec("y", 0.3)
    row = trial_row("s", spec, [{**_hist(1)[0], "train_loss": 0.123456789, "wall_s": 12.3456}], "ok")
    tr.log_trial(row, spec, [])
    spec_f = _spec("z", 0.5)
    tr.log_trial(trial_row("s", spec_f, [], "failed", error="boom"), spec_f, [])
    y, z = (tr.client.get_run(tr._logged[t][0]).data for t in "yz")
    assert y.tags["final_train_loss"] == "0.1235" and y.tags["wall_s"] == "12.35" and y.tags["diverged"] == "0"
    assert z.params["lr"] == "0.5" and z.tags["epochs_done"] == "0" and z.tags["error"] == "boom"


@pytest.mark.slow
def test_report_draws_the_transfer_study_in_mlflow(tmp_path, sqlite_uri):
    """About 3-10 s: the demo's committed results logged as a report; read back with MlflowClient."""
    import json
    import math
    import shutil
    from pathlib import Path

    import numpy as np
    from mlflow.tracking import MlflowClient

    from orchestrator.stores.tracking import log_report

    sd = tmp_path / "demo"
    shutil.copytree(Path(__file__).resolve().parents[3] / "docs" / "demo_cpu", sd)
    uri = sqlite_uri
    assert Tracker(uri, "demo", artifact_root=tmp_path / "mlartifacts").start()
    rid = log_report(sd / "report", uri, "demo", "demo")
    assert rid
    client = MlflowClient(tracking_uri=uri)
    summary = json.loads((sd / "report" / "summary.json").read_text())
    # the experiment's description: the setup and every group's verdict
    text = client.get_experiment_by_name("demo").tags["mlflow.note.content"]
    assert "**Setup**" in text and "fmnist7" in text and "widths 64, 128, 256, 512" in text
    for g in summary["groups"]:
        assert f"**{g['verdict']}**" in text
    run = client.get_run(rid)
    # ∞ regret is a tag, finite values metrics at 4 significant figures
    for g in summary["groups"]:
        label = "-".join(
            [g["algorithm"], g["parametrization"]] + ([f"T{g['inference_steps']}"] if g["algorithm"] == "pc" else [])
        )
        if g["max_regret"] == "inf":
            assert run.data.tags[f"max_regret/{label}"] == "inf" and f"max_regret/{label}" not in run.data.metrics
        else:
            assert run.data.metrics[f"max_regret/{label}"] == float(f"{g['max_regret']:.4g}")
    # η* against width: one point per width, step = width
    pw = [r for r in summary["per_width"] if r["algorithm"] == "bp" and r["parametrization"] == "mup"]
    hist = client.get_metric_history(rid, "lr_star/bp-mup")
    assert sorted((m.step, m.value) for m in hist) == sorted((r["width"], float(f"{r['lr_star']:.4g}")) for r in pw)
    # the loss against log2 lr of one width: the mean over the seeds whose loss is finite
    trials = pd.read_parquet(sd / "trials.parquet")
    t = trials[(trials.algorithm == "bp") & (trials.parametrization == "mup") & (trials.width == 128)]
    t = t[np.isfinite(t.final_train_loss)]
    want = {round(4 * math.log2(lr)): float(f"{v:.4g}") for lr, v in t.groupby("lr").final_train_loss.mean().items()}
    got = {m.step: m.value for m in client.get_metric_history(rid, "loss_vs_log2lr/bp-mup/w128")}
    assert got == want and len(got) > 5
    # analysed again: the series are replaced, not doubled
    assert log_report(sd / "report", uri, "demo", "demo") == rid
    assert len(client.get_metric_history(rid, "lr_star/bp-mup")) == len(pw)


def test_live_counts_on_the_parent_run_are_throttled_and_the_last_always_written(tmp_path, sqlite_uri):
    """A few seconds: counts as ``progress/*`` metrics and one tag on the parent run, at most one write per
    10 s; what the throttle held back is written by finish()."""
    from orchestrator.stores.tracking import PROGRESS_INTERVAL_S, TAG_PROGRESS

    uri = sqlite_uri
    tr = Tracker(uri, "s", artifact_root=tmp_path / "art")
    assert tr.start() and PROGRESS_INTERVAL_S >= 5
    t0 = time.monotonic()
    tr.log_progress({"ok": 1, "diverged": 0, "failed": 0, "running": 3, "skipped": 2}, 10)
    tr.log_progress({"ok": 2, "diverged": 1, "failed": 0, "running": 3, "skipped": 2}, 10)  # held back
    tr.log_progress({"ok": 3, "diverged": 1, "failed": 1, "running": 2, "skipped": 2}, 10)  # held back
    assert time.monotonic() - t0 < PROGRESS_INTERVAL_S  # else the second call was due and the check below moot
    run = tr.client.get_run(tr.parent_id)
    assert run.info.status == "RUNNING" and run.data.tags[TAG_PROGRESS].startswith("3/10 done: ok 1")
    assert run.data.metrics["progress/done"] == 3 and run.data.metrics["progress/running"] == 3
    assert run.data.metrics["progress/total"] == 10
    tr.finish({"trials_ok": 3.0})
    run = tr.client.get_run(tr.parent_id)
    assert run.data.tags[TAG_PROGRESS] == "7/10 done: ok 3, diverged 1, failed 1, running 2, skipped 2"
    assert run.data.metrics["progress/done"] == 7 and run.data.metrics["progress/failed"] == 1
    assert len(tr.client.get_metric_history(tr.parent_id, "progress/ok")) == 2  # two writes, not three
    assert run.info.status == "FINISHED" and tr.enabled


def test_description_previews_are_at_most_720_px_wide(tmp_path):
    """The η* figure of a report with many panels (2340 px wide) overflowed the parent run's page."""
    from PIL import Image

    from orchestrator.stores.tracking import _previews

    Image.new("RGB", (2340, 690), "white").save(tmp_path / "lr_star_vs_width.png")
    Image.new("RGB", (495, 756), "white").save(tmp_path / "loss_vs_lr.png")
    assert _previews(tmp_path, tmp_path / "preview") == ["lr_star_vs_width.png"]  # the narrow one is shown as is
    with Image.open(tmp_path / "preview" / "lr_star_vs_width.png") as im:
        assert im.size == (720, 212)
    (tmp_path / "loss_vs_lr.png").write_bytes(b"not a png")  # unreadable: no preview, no error
    assert _previews(tmp_path, tmp_path / "p2", max_px=100) == ["lr_star_vs_width.png"]


def test_a_comparison_is_one_run_of_the_comparisons_experiment(tmp_path, sqlite_uri):
    """analyze A B --out DIR: DIR's files under comparison/, report.md as the description with its figure
    served by MLflow, the sweeps as a tag; the same DIR again updates that run (about 1-3 s)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.stores.tracking import COMPARISONS, log_comparison

    out = tmp_path / "cmp"
    out.mkdir()
    (out / "report.md").write_text("# two sweeps\n\n| a | b |\n|---|---|\n\n![eta*](lr_star_compare.png)\n")
    (out / "lr_star_compare.png").write_bytes(b"\x89PNG fake")
    (out / "comparison.json").write_text("{}\n")
    rid = log_comparison(out, sqlite_uri, ["results/a", "results/b"])
    client = MlflowClient(sqlite_uri)
    run = client.get_run(rid)
    assert client.get_experiment(run.info.experiment_id).name == COMPARISONS
    assert run.data.tags["mutransfer.sweeps"] == "results/a, results/b" and run.info.status == "FINISHED"
    note = run.data.tags["mlflow.note.content"]
    assert "| a | b |" in note and f"get-artifact?path=comparison%2Flr_star_compare.png&run_uuid={rid}" in note
    logged = tmp_path / "mlartifacts" / COMPARISONS / rid / "artifacts" / "comparison"  # served by `mutransfer ui`
    assert sorted(f.name for f in logged.iterdir()) == ["comparison.json", "lr_star_compare.png", "report.md"]
    assert log_comparison(out, sqlite_uri, ["results/b", "results/a"]) == rid
    assert client.get_run(rid).data.tags["mutransfer.sweeps"] == "results/b, results/a"
