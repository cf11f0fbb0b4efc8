"""Parquet results store: rows keyed by trial id, histories replaced whole, atomic writes, ownership."""

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import BadInput
from orchestrator.results_store import HISTORY_COLUMNS, TRIAL_COLUMNS, ResultsStore, trial_row


def _spec(tid, lr=0.1, width=32):
    return {"trial_id": tid, "trainer": {"algorithm": "bp", "parametrization": "mup", "optimizer": "sgd",
                                         "model": "mlp", "width": width, "base_width": 16, "depth": 3, "lr": lr,
                                         "inference_steps": 20, "seed": 0, "gamma_bar_L": 0.0},
            "data": {"dataset": "fmnist"}, "train": {"epochs": 2}, "swept": ["width", "lr", "gamma_bar_L"]}


def _hist(n, loss=1.0):
    return [{"epoch": e, "train_loss": loss / e, "test_loss": loss / e, "test_acc": 0.5, "wall_s": float(e),
             "diverged": False} for e in range(1, n + 1)]


def test_trial_row_has_the_contract_columns_then_other_swept_keys():
    row = trial_row("s", _spec("a"), _hist(2), "ok", node="n1", hostname="h")
    assert list(row)[:len(TRIAL_COLUMNS)] == TRIAL_COLUMNS
    assert row["gamma_bar_L"] == 0.0 and "width" in row
    assert row["final_test_loss"] == 0.5 and row["epochs_done"] == 2 and row["node"] == "n1"
    empty = trial_row("s", _spec("b"), [], "failed", error="boom")
    assert math.isnan(empty["final_test_loss"]) and empty["epochs_done"] == 0


def test_record_replaces_by_trial_id_and_never_duplicates(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.record([trial_row("s", _spec("a"), _hist(1), "failed")], {"a": _hist(1)})
    store.record([trial_row("s", _spec("b"), _hist(2), "ok")], {"b": _hist(2)})
    assert store.done_ids() == {"b"}  # a failed trial is run again
    store.record([trial_row("s", _spec("a"), _hist(2, 3.0), "ok")], {"a": _hist(2, 3.0)})
    t, h = store.trials(), store.history()
    assert sorted(t.trial_id) == ["a", "b"] and store.done_ids() == {"a", "b"}
    assert list(h.columns[:len(HISTORY_COLUMNS)]) == HISTORY_COLUMNS
    assert len(h) == 4 and not h.duplicated(["trial_id", "epoch"]).any()
    assert h[h.trial_id == "a"].test_loss.tolist() == [3.0, 1.5]


def test_a_crash_during_a_write_leaves_the_previous_table(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "s")
    store.record([trial_row("s", _spec("a"), _hist(2), "ok")], {"a": _hist(2)})
    good = store.trials()

    def half_write(table, where, **kw):
        where.write(b"PAR1 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        store.record([trial_row("s", _spec("b"), _hist(1), "ok")], {"b": _hist(1)})
    monkeypatch.undo()
    pd.testing.assert_frame_equal(store.trials(), good)
    assert len(store.history()) == 2
    assert [p.name for p in store.dir.rglob("*") if p.name.endswith(".tmp")] == []


def test_check_owner_refuses_a_different_sweep(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.write_config("name: s\ngrid:\n  width: [16]\nresources: {cpu: 1}\n")
    store.check_owner({"name": "s", "grid": {"width": [16]}})          # same sweep, other resources: fine
    with pytest.raises(BadInput, match=r"grid.width=\[16, 32\] \(was \[16\]\)"):
        store.check_owner({"name": "s", "grid": {"width": [16, 32]}})
