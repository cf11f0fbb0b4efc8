"""analysis.over_time: η* and k at every epoch from the history table, and its figure."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.over_time import diverged_at, k_over_time, sgd_steps_from_config, trials_at_epoch
from analysis.over_time_plots import plot_k_over_time
from analysis.planted import planted_trials
from analysis.transfer import analyze

KW = {"metric": "final_train_loss", "mode": "min", "max_drift": 0.2, "max_regret": 0.05}


def test_recovers_a_k_that_moves_with_the_epoch():
    k, per_epoch, epochs = -0.5, 0.25, 3
    trials, history = planted_trials(k, k_per_epoch=per_epoch, epochs=epochs, steps_per_epoch=15)
    out = k_over_time(trials, history, **KW)
    assert list(out.epoch) == [1, 2, 3] and list(out.sgd_steps) == [15.0, 30.0, 45.0]
    planted = k + per_epoch * (out.epoch - epochs)  # -1.0, -0.75, -0.5
    np.testing.assert_allclose(out.drift_exponent, planted, atol=0.05)
    assert (out.drift_lo <= out.drift_exponent).all() and (out.drift_exponent <= out.drift_hi).all()
    assert list(out.verdict) == ["drifts"] * 3
    assert out.attrs["keys"] == ["algorithm", "parametrization", "inference_steps"] and out.attrs["max_drift"] == 0.2


def test_the_last_epoch_is_the_analysis_of_the_trials_table():
    parts = [planted_trials(k, parametrization=p, rng_seed=i) for i, (p, k) in enumerate([("sp", -1.0), ("mup", 0.0)])]
    trials, history = (pd.concat(x, ignore_index=True) for x in zip(*parts))
    out = k_over_time(trials, history, **KW)
    last = out[out.epoch == 3].set_index("parametrization")
    full = analyze(trials, **KW).groups.set_index("parametrization")
    np.testing.assert_allclose(last.drift_exponent, full.drift_exponent.loc[last.index], rtol=1e-9)
    assert list(last.verdict) == list(full.verdict.loc[last.index])
    assert set(out.verdict[out.parametrization == "mup"]) == {"transfers"}


def _toy() -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "lr": [0.1] * 5,
            "status": ["ok", "diverged", "diverged", "failed", "ok"],
            "final_train_loss": [0.3, np.inf, np.inf, np.nan, 0.4],
        }
    )
    history = pd.DataFrame(
        {
            "trial_id": ["a", "a", "a", "b", "b", "c", "e"],
            "epoch": [1, 2, 3, 1, 2, 1, 1],
            "train_loss": [0.9, 0.5, 0.3, 0.8, np.inf, 0.7, 0.4],
            "test_loss": [1.0, 0.6, 0.4, 0.9, np.inf, 0.8, 0.5],
            "test_acc": [0.5, 0.6, 0.7, 0.4, np.nan, 0.3, 0.5],
            "diverged": [False, False, False, False, True, False, False],
        }
    )
    return trials, history


def test_a_divergence_holds_from_its_epoch_on_and_unrecorded_trials_are_left_out():
    trials, history = _toy()
    div = diverged_at(trials, history)
    assert div["b"] == 2 and div["c"] == 1 and np.isnan(div["a"])  # c: diverged, no flag: at its last epoch
    e1 = trials_at_epoch(trials, history, 1, div).set_index("trial_id")
    assert list(e1.index) == ["a", "b", "c", "e"]  # the failed trial is left out
    assert e1.status.to_dict() == {"a": "ok", "b": "ok", "c": "diverged", "e": "ok"}
    assert e1.final_train_loss["b"] == 0.8 and e1.final_test_acc["a"] == 0.5 and np.isinf(e1.final_test_loss["c"])
    e3 = trials_at_epoch(trials, history, 3, div).set_index("trial_id")
    assert list(e3.index) == ["a", "b", "c"]  # e ran one epoch: not recorded at 3
    assert e3.status.to_dict() == {"a": "ok", "b": "diverged", "c": "diverged"}
    assert e3.final_train_loss["a"] == 0.3 and np.isinf(e3.final_train_loss["b"]) and np.isnan(e3.final_test_acc["b"])


def test_old_history_without_sgd_steps_takes_them_from_the_sweep_config():
    trials, history = planted_trials(0.0, widths=(64, 128, 256), seeds=(0, 1), epochs=2, steps_per_epoch=7)
    cfg = {"data": {"dataset": "fmnist7", "subset": 2005}, "train": {"batch_size": 128}}  # 2000 images: 15 a epoch
    old = k_over_time(trials, history.drop(columns="sgd_steps"), sweep_yaml_cfg=cfg, **KW)
    assert list(old.sgd_steps) == [15.0, 30.0]
    counted = k_over_time(trials, history, sweep_yaml_cfg=cfg, **KW)  # the loop's count wins over the config
    assert list(counted.sgd_steps) == [7.0, 14.0]
    assert k_over_time(trials, history.drop(columns="sgd_steps"), **KW).sgd_steps.isna().all()


@pytest.mark.parametrize(
    "data, batch, per_epoch",
    [
        ({"dataset": "fmnist", "subset": 2005}, 128, 15),
        ({"dataset": "fmnist4", "subset": None}, 1000, 60),
        ({"dataset": "fmnist", "subset": 3}, 128, 1),  # one image a class, one batch of all ten
        ({"dataset": "teacher", "subset": 0}, 100, 10),
        ({"dataset": "my_plugin_set", "subset": 100}, 10, None),
    ],
)
def test_sgd_steps_from_config(data, batch, per_epoch):
    steps = sgd_steps_from_config({"data": data, "train": {"batch_size": batch}}, np.array([1, 3]))
    if per_epoch is None:
        assert np.isnan(steps).all()
    else:
        assert list(steps) == [per_epoch, 3 * per_epoch]


def _fake_fmnist(d, per_class: int) -> None:
    """Four IDX files of random 28 × 28 images, ``per_class`` training images of each class."""
    rng = np.random.default_rng(0)
    n = 10 * per_class
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 255, (n, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 255, (20, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10,
    }
    d.mkdir()
    for name, a in arrays.items():
        header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + b"".join(struct.pack(">I", s) for s in a.shape)
        (d / name).write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))


@pytest.mark.parametrize(
    "dataset, subset, batch",
    [("teacher", 100, 32), ("teacher", 10, 32), ("fmnist7", 205, 64), ("fmnist4", 99, 16)],
)
def test_the_fallback_equals_what_the_loop_counts(tmp_path, monkeypatch, dataset, subset, batch):
    from trainers import TrainerConfig, load_dataset, make_trainer, train

    _fake_fmnist(tmp_path / "fm", per_class=30)
    monkeypatch.setenv("MUTRANSFER_DATA", str(tmp_path / "fm"))
    data = load_dataset(dataset, subset=subset, test_subset=10)
    loss = "ce" if data.num_classes else "mse"
    tr = make_trainer(TrainerConfig(width=16, base_width=16, loss=loss, lr=0.01), data.input_dim, data.output_dim)
    rows = train(tr, data, 2, batch_size=batch)
    cfg = {"data": {"dataset": dataset, "subset": subset}, "train": {"batch_size": batch}}
    assert [r["sgd_steps"] for r in rows] == list(sgd_steps_from_config(cfg, np.array([1, 2])))


def test_a_metric_without_history_is_an_error():
    trials, history = planted_trials(0.0, widths=(64, 128), seeds=(0,))
    with pytest.raises(ValueError, match="no per-epoch history"):
        k_over_time(trials, history, **{**KW, "metric": "final_wall_s"})
    assert k_over_time(trials, history.iloc[:0], **KW).empty


def test_the_figure_is_written_as_png_and_svg_at_a_page_aspect(tmp_path):
    import matplotlib.image

    groups = [("bp", "sp", -1.0), ("bp", "mup", 0.0), ("pc", "sp", -1.0), ("pc", "mup", 0.0), ("tp", "mup", 0.1)]
    parts = [
        planted_trials(
            k, algorithm=a, parametrization=p, widths=(64, 128, 256), seeds=(0, 1), k_per_epoch=0.1, rng_seed=i
        )
        for i, (a, p, k) in enumerate(groups)
    ]
    trials, history = (pd.concat(x, ignore_index=True) for x in zip(*parts))
    out = k_over_time(trials, history, **KW)
    png = plot_k_over_time(out, tmp_path / "k_over_time.png")
    assert png.exists() and png.with_suffix(".svg").exists()
    h, w = matplotlib.image.imread(png).shape[:2]
    assert 1.4 < w / h < 1.8
    svg = png.with_suffix(".svg").read_text()
    assert "BP" in svg and "TP" in svg and "SGD steps" in svg
    assert plot_k_over_time(out.iloc[:0], tmp_path / "none.png") is None
    no_steps = out.assign(sgd_steps=np.nan)  # a plugin's dataset recorded before the count: epochs instead
    assert plot_k_over_time(no_steps, tmp_path / "epochs.png", formats=("png",)).exists()


# ---- k_at_steps: the verdict read at given SGD-step counts (issue 30's crossed table) ----------------
def test_k_at_steps_reads_the_epochs_nearest_the_targets():
    from analysis.over_time import epochs_at_steps, k_at_steps

    k, per_epoch, epochs = -0.6, 0.02, 20
    trials, history = planted_trials(k, k_per_epoch=per_epoch, epochs=epochs, steps_per_epoch=50)
    assert epochs_at_steps(history, (100, 300, 1000, 5000)) == {100.0: 2, 300.0: 6, 1000.0: 20, 5000.0: None}
    out = k_at_steps(trials, history, (100, 300, 1000, 5000), **KW)
    assert list(out.target_steps) == [100.0, 300.0, 1000.0] and list(out.epoch) == [2, 6, 20]
    assert list(out.sgd_steps) == [100.0, 300.0, 1000.0] and out.attrs["missing"] == [5000.0]
    np.testing.assert_allclose(out.drift_exponent, k + per_epoch * (out.epoch - epochs), atol=0.05)
    assert {"regret_lo", "regret_hi", "verdict"} <= set(out.columns)
    # the last target is the analysis of the trials table itself
    full = analyze(trials, **KW).groups.iloc[0]
    assert out.drift_exponent.iloc[-1] == pytest.approx(full.drift_exponent, rel=1e-9)
    assert out.verdict.iloc[-1] == full.verdict


def test_k_at_steps_counts_steps_from_the_config_when_history_has_none():
    from analysis.over_time import k_at_steps

    trials, history = planted_trials(0.0, epochs=4, steps_per_epoch=50)
    history = history.drop(columns=["sgd_steps"])
    cfg = {"data": {"dataset": "fmnist7", "subset": 6400}, "train": {"batch_size": 128}}  # 50 per epoch
    out = k_at_steps(trials, history, (100, 200), sweep_yaml_cfg=cfg, **KW)
    assert list(out.epoch) == [2, 4]
    assert k_at_steps(trials, history, (100,), **KW).empty  # no counts at all: nothing is read


def test_over_time_main_prints_and_writes_the_table(tmp_path, capsys):
    from analysis.over_time import main

    assert main([str(tmp_path / "missing")]) == 2
    out = tmp_path / "k.parquet"
    study = str(Path(__file__).resolve().parents[2] / "docs" / "paper_mlp_pool_e10_cpu")
    assert main([study, "--steps", "30,150,1000", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert sorted(set(table.target_steps)) == [30.0, 150.0] and set(table.epoch) == {2, 10}
    assert "not recorded within 0.25 of: 1000" in capsys.readouterr().out


def test_panel_titles_name_what_applies_and_fit_a_third_of_a_column():
    from analysis.over_time_plots import PANEL_CHARS, _panel_title

    pk = ["algorithm", "loss", "inference_steps", "sequential_inference", "gamma_bar_L"]
    single = _panel_title(pk, ("pc", "mse", "6", "True", "-1.0"))
    assert single == "PC MSE\nsingle shot\nγ̄_L=−1"  # T is not read by the single-shot schedule
    assert _panel_title(pk, ("pc", "ce", "6", "-", "-")) == "PC CE T=6"  # keys the study lacks: left out
    assert _panel_title(pk, ("bp", "mse", "6", "-", "-")) == "BP MSE"  # PC's keys: not on a BP panel
    parallel = _panel_title(pk, ("pc", "mse", "6", "False", "0.0"))
    assert all(len(line) <= PANEL_CHARS for line in parallel.splitlines()) and "parallel" in parallel
