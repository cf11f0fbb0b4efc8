"""analysis.load: results directories, sweep.yaml thresholds, and the same numbers from Parquet and MLflow."""

import numpy as np
import pandas as pd
import pytest

from analysis.io import write_parquet_atomic
from analysis.load import LogError, load_sweep, read_mlflow
from analysis.transfer import analyze


def test_load_reads_parquet_and_the_verify_thresholds(planted_dir):
    (planted_dir / "sweep.yaml").write_text(
        "name: planted\nobjective: {metric: final_test_loss, mode: min}\nverify: {max_drift: 0.3, max_regret: 0.1}\n"
    )
    logs = load_sweep(planted_dir)
    assert logs.source == "parquet" and logs.name == "planted"
    assert logs.objective == {"metric": "final_test_loss", "mode": "min"}
    assert logs.verify == {"max_drift": 0.3, "max_regret": 0.1}
    assert len(logs.trials) == 4 * 5 * 13 * 3 and len(logs.history) > 0


def test_load_defaults_without_sweep_yaml(planted_dir):
    (planted_dir / "sweep.yaml").unlink()
    logs = load_sweep(planted_dir)
    assert logs.verify == {"max_drift": 0.2, "max_regret": 0.05}
    assert logs.objective["metric"] == "final_train_loss" and logs.notes


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("verify: {max_drift: lots}\n", "verify.max_drift"),
        ("objective: {mode: smallest}\n", "objective.mode"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_sweep_yaml_names_the_key(planted_dir, yaml_text, match):
    (planted_dir / "sweep.yaml").write_text(yaml_text)
    with pytest.raises(LogError, match=match):
        load_sweep(planted_dir)


def test_not_a_results_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(LogError, match="no such directory"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogError, match="no trials.parquet"):
        load_sweep(tmp_path / "empty")


@pytest.mark.slow
def test_same_numbers_from_parquet_and_from_mlflow(tmp_path, monkeypatch, mlflow_log_sweep, make_planted):
    """Planted trials written to a real SQLite MLflow store and read back give the same analysis.

    144 runs; about 60 s on 2 busy CPUs (MLflow's SQLite schema set-up alone takes 5-15 s).
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    groups = (("bp", "mup", 0.0), ("bp", "sp", -1.0))
    trials, history = make_planted(
        groups, name="planted", seeds=(0, 1), widths=(64, 128, 256, 512), log2_lrs=tuple(range(-8, 1))
    )
    trials.loc[trials.index[5], "status"] = "failed"
    root = tmp_path / "results"
    sweep_dir = root / "planted"
    sweep_dir.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow_log_sweep(trials, history, uri, "planted", root / "mlartifacts")

    logs = load_sweep(sweep_dir)  # no trials.parquet: found results/mlflow.db
    assert logs.source.startswith("mlflow:") and len(logs.trials) == len(trials)
    back = logs.trials.set_index("trial_id").loc[trials.trial_id]
    for col in ("width", "lr", "seed", "inference_steps", "base_width"):
        np.testing.assert_array_equal(back[col].to_numpy(), trials[col].to_numpy())
    assert (back.status.to_numpy() == trials.status.to_numpy()).all()
    div = trials.status.to_numpy() == "diverged"
    assert div.any() and np.isinf(back.final_train_loss.to_numpy()[div]).all()
    # tracking format 3: a trial's own numbers are tags at 4 significant figures; they come back
    np.testing.assert_allclose(back.epochs_done.to_numpy(float), trials.epochs_done.to_numpy(float), rtol=1e-3)
    assert not any("lack" in n for n in logs.notes), logs.notes
    assert len(logs.history) == len(history)  # diverged epochs (not logged: non-finite) come back as +inf
    h = logs.history.set_index(["trial_id", "epoch"]).loc[history.set_index(["trial_id", "epoch"]).index]
    np.testing.assert_allclose(h.train_loss.to_numpy(), history.train_loss.to_numpy())

    from_parquet = analyze(trials)
    from_mlflow = analyze(logs.trials)
    cols = ["lr_star", "lr_star_lo", "lr_star_hi", "best_loss", "regret"]
    pd.testing.assert_frame_equal(from_mlflow.per_width[cols], from_parquet.per_width[cols])
    gcols = ["drift_exponent", "drift_lo", "drift_hi", "max_regret", "verdict"]
    pd.testing.assert_frame_equal(from_mlflow.groups[gcols], from_parquet.groups[gcols])
    # two seeds: the excess regret's jackknife needs three, so μP cannot be shown to transfer
    assert list(from_parquet.groups.verdict) == ["inconclusive", "drifts"]
    assert "regret" in from_parquet.groups.verdict_reason.iloc[0]

    # Parquet wins when both are there
    write_parquet_atomic(trials.iloc[:10], sweep_dir / "trials.parquet")
    assert load_sweep(sweep_dir).source == "parquet"
    # another sweep in the same store is not mixed in
    assert read_mlflow(uri, "planted", sweep="other")[0].empty


def test_mlflow_params_are_parsed_back_to_numbers_and_bools():
    from analysis.load import _parse_column, _strip_prefix

    assert _parse_column(["64", "128", "None"]) == [64, 128, None]
    assert _parse_column(["0.5", "6.103515625e-05"]) == [0.5, 6.103515625e-05]
    assert _parse_column(["True", "False"]) == [True, False]
    assert _parse_column(["sgd", "1"]) == ["sgd", "1"]
    assert _strip_prefix("trainer.width") == "width" and _strip_prefix("lr") == "lr"


def test_top_level_metric_and_mode_are_read_with_a_note(planted_dir):
    (planted_dir / "sweep.yaml").write_text("name: planted\nmetric: test_loss\nmode: min\n")
    logs = load_sweep(planted_dir)
    assert logs.objective == {"metric": "final_test_loss", "mode": "min"}
    assert any("objective" in n for n in logs.notes) and any("verify" in n for n in logs.notes)


@pytest.mark.slow
def test_mlflow_reader_accepts_prefixed_params_and_last_epoch_metrics(tmp_path):
    """Runs logged with ``trainer.``-prefixed params, a ``status`` tag, per-epoch metrics only and
    ±inf stored as MLflow's ±max float (what the sweep's tracker wrote on 2026-11-28). About 20 s."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("legacy", artifact_location=(tmp_path / "art").as_uri())
    for i, (lr, status, loss) in enumerate([(0.1, "ok", 0.4), (0.2, "ok", 0.3), (0.4, "diverged", float("inf"))]):
        run = client.create_run(
            exp,
            run_name=f"t{i}",
            tags={
                "mutransfer.role": "trial",
                "mutransfer.sweep": "legacy",
                "mutransfer.trial_id": f"t{i}",
                "status": status,
            },
        )
        client.log_param(run.info.run_id, "trainer.width", "64")
        client.log_param(run.info.run_id, "trainer.lr", str(lr))
        client.log_param(run.info.run_id, "data.dataset", "fmnist")
        client.log_metric(run.info.run_id, "train_loss", 9.0, step=1)
        client.log_metric(run.info.run_id, "train_loss", loss, step=2)
        client.set_terminated(run.info.run_id)
    trials, history = read_mlflow(uri, "legacy", sweep="legacy")
    t = trials.set_index("trial_id")
    assert t.loc["t0", "lr"] == 0.1 and t.loc["t0", "width"] == 64 and t.loc["t0", "dataset"] == "fmnist"
    assert t.loc["t1", "final_train_loss"] == 0.3 and t.loc["t2", "status"] == "diverged"
    assert np.isinf(t.loc["t2", "final_train_loss"]) and "last per-epoch" in trials.attrs["notes"][0]
    assert np.isinf(history[(history.trial_id == "t2") & (history.epoch == 2)].train_loss).all()
