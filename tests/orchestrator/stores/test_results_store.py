"""Parquet results store: rows keyed by trial id, histories replaced whole, atomic writes, ownership."""

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import BadInput
from orchestrator.stores.results_store import HISTORY_COLUMNS, TRIAL_COLUMNS, ResultsStore, trial_row


def _spec(tid, lr=0.1, width=32):
    return {
        "trial_id": tid,
        "trainer": {
            "algorithm": "bp",
            "parametrization": "mup",
            "optimizer": "sgd",
            "model": "mlp",
            "width": width,
            "base_width": 16,
            "depth": 3,
            "lr": lr,
            "inference_steps": 20,
            "seed": 0,
            "gamma_bar_L": 0.0,
        },
        "data": {"dataset": "fmnist"},
        "train": {"epochs": 2},
        "swept": ["width", "lr", "gamma_bar_L"],
    }


def _hist(n, loss=1.0):
    return [
        {
            "epoch": e,
            "train_loss": loss / e,
            "test_loss": loss / e,
            "test_acc": 0.5,
            "wall_s": float(e),
            "diverged": False,
        }
        for e in range(1, n + 1)
    ]


def test_trial_row_has_the_contract_columns_then_other_swept_keys():
    row = trial_row("s", _spec("a"), _hist(2), "ok", node="n1", hostname="h")
    assert list(row)[: len(TRIAL_COLUMNS)] == TRIAL_COLUMNS
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
    assert list(h.columns[: len(HISTORY_COLUMNS)]) == HISTORY_COLUMNS
    assert len(h) == 4 and not h.duplicated(["trial_id", "epoch"]).any()
    assert h[h.trial_id == "a"].test_loss.tolist() == [3.0, 1.5]


def test_sgd_steps_are_written_beside_an_old_base_that_lacks_them(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.record([trial_row("s", _spec("a"), _hist(2), "ok")], {"a": _hist(2)})  # recorded before the count
    assert store.compact() == 2
    counted = [{**h, "sgd_steps": 15 * h["epoch"]} for h in _hist(2)]
    row = trial_row("s", _spec("b"), counted, "ok")
    assert row["sgd_steps"] == 30 and trial_row("s", _spec("a"), _hist(2), "ok")["sgd_steps"] is None
    store.record([row], {"b": counted})
    h, t = store.history().set_index(["trial_id", "epoch"]), store.trials().set_index("trial_id")
    assert h.sgd_steps[("b", 1)] == 15 and h.sgd_steps[("b", 2)] == 30 and h.sgd_steps["a"].isna().all()
    assert t.sgd_steps["b"] == 30 and pd.isna(t.sgd_steps["a"])


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


def test_check_owner_lets_the_grid_grow_and_refuses_a_different_sweep(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.write_config("name: s\ngrid:\n  width: [16]\nresources: {cpu: 1}\n")
    store.check_owner({"name": "s", "grid": {"width": [16]}})  # same sweep, other resources: fine
    store.check_owner({"name": "s", "grid": {"width": [16, 32]}})  # one more width: the study grows
    with pytest.raises(BadInput, match=r"data=\{'subset': 1\} \(was None\).*only grid axes may grow"):
        store.check_owner({"name": "s", "data": {"subset": 1}, "grid": {"width": [16]}})


def test_restate_axes_fills_a_new_axis_column_from_the_spec_atomically_and_once(tmp_path, monkeypatch):
    """Rows recorded while ``activation`` was fixed have no such column: a grid spec of the same id
    gives its value; a row that is no grid point gets sweep.yaml's fixed value, or stays unknown
    when sweep.yaml already has the axis; a crash mid-write changes nothing; history is untouched."""
    from orchestrator.spec.config import TrialSpec

    store = ResultsStore(tmp_path / "s")
    for tid, lr in (("a", 0.1), ("b", 0.2)):
        store.record([trial_row("s", _spec(tid, lr), _hist(2), "ok")], {tid: _hist(2)})
    store.write_config("name: s\ngrid:\n  lr: [0.1, 0.2]\n  activation: [tanh, relu]\n")
    history, before = store.history(), store.trials()
    grid = {"name": "s", "grid": {"lr": [0.1], "activation": ["tanh", "relu"]}}
    specs = [TrialSpec("a", {**_spec("a")["trainer"], "activation": "relu"}, {}, {}, ("lr", "activation"))]

    def half_write(table, where, **kw):
        where.write(b"PAR1 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        store.restate_axes(grid, specs)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(store.trials(), before)
    assert store.restate_axes(grid, specs) == 1 and store.restate_axes(grid, specs) == 0
    t = store.trials().set_index("trial_id")
    assert t.activation["a"] == "relu" and pd.isna(t.activation["b"])  # b: an axis already, no spec: unknown
    store.write_config("name: s\ntrainer: {activation: linear}\ngrid:\n  lr: [0.1]\n")
    assert store.restate_axes(grid, specs) == 1 and store.trials().set_index("trial_id").activation["b"] == "linear"
    pd.testing.assert_frame_equal(store.history(), history)
    pd.testing.assert_frame_equal(store.trials().drop(columns="activation"), before, check_dtype=False)
    assert store.compact() > 0 and list(store.trials().activation) == ["relu", "linear"]
    assert [p.name for p in store.dir.rglob("*") if p.name.endswith(".tmp")] == []


# ---- part files (one per recorded trial) -------------------------------------------------
def _old_layout(store, rows, hists):
    """What ResultsStore.record wrote before part files: both tables rewritten whole."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from store_bench import old_record

    for row in rows:
        old_record(store, [row], {row["trial_id"]: hists[row["trial_id"]]})


def _script():
    """Trials a..e, then a and c recorded again (a failed first, c with another history), then f."""
    out = [
        ("a", "failed", _hist(1)),
        ("b", "ok", _hist(2)),
        ("c", "ok", _hist(2)),
        ("d", "diverged", _hist(1)),
        ("e", "ok", _hist(2)),
        ("a", "ok", _hist(2, 3.0)),
        ("c", "ok", _hist(2, 5.0)),
        ("f", "failed", []),
    ]
    return [(trial_row("s", _spec(t, lr=0.1 * (i + 1)), h, st), h) for i, (t, st, h) in enumerate(out)]


def test_part_files_read_back_identical_to_the_old_layout_and_after_compaction(tmp_path):
    new, old = ResultsStore(tmp_path / "new"), ResultsStore(tmp_path / "old")
    for row, hist in _script():
        new.record([row], {row["trial_id"]: hist})
        _old_layout(old, [row], {row["trial_id"]: hist})
    assert not new.trials_path.exists() and len(list((new.dir / "trials").glob("part-*.parquet"))) == 8
    assert len(list((new.dir / "history").glob("part-*.parquet"))) == 8
    pd.testing.assert_frame_equal(new.trials(), old.trials())
    pd.testing.assert_frame_equal(new.history(), old.history())
    assert new.done_ids() == old.done_ids() == {"a", "b", "c", "d", "e"}
    assert new.compact() == 16 and not (new.dir / "trials").exists() and not (new.dir / "history").exists()
    pd.testing.assert_frame_equal(new.trials(), old.trials())
    pd.testing.assert_frame_equal(new.history(), old.history())
    # the compacted files are the single-file layout: read by path as before
    pd.testing.assert_frame_equal(pd.read_parquet(new.trials_path), pd.read_parquet(old.trials_path))


def test_an_old_single_file_directory_with_new_parts_reads_as_one_and_resume_skips_across_layouts(tmp_path):
    from analysis.load import load_sweep

    store = ResultsStore(tmp_path / "s")
    script = _script()
    _old_layout(store, [r for r, _ in script[:4]], {r["trial_id"]: h for r, h in script[:4]})  # a failed, b, c, d
    assert store.done_ids() == {"b", "c", "d"}
    for row, hist in script[4:]:  # e, a again (ok), c again, f failed: as part files
        store.record([row], {row["trial_id"]: hist})
    ref = ResultsStore(tmp_path / "ref")
    _old_layout(ref, [r for r, _ in script], {r["trial_id"]: h for r, h in script})
    assert store.done_ids() == {"a", "b", "c", "d", "e"}  # a sweep re-run skips these, whatever file holds them
    pd.testing.assert_frame_equal(store.trials(), ref.trials())
    pd.testing.assert_frame_equal(store.history(), ref.history())
    logs = load_sweep(store.dir)  # analyze's reader: the same table
    pd.testing.assert_frame_equal(logs.trials, ref.trials())
    pd.testing.assert_frame_equal(logs.history, ref.history())
    assert logs.source == "parquet"
    store.compact()
    pd.testing.assert_frame_equal(load_sweep(store.dir).trials, ref.trials())


def _read_bytes() -> int:
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])


def test_recording_a_trial_reads_no_table_whatever_the_store_holds(tmp_path, monkeypatch):
    """The cost of a record must not grow with the trials recorded: it opens no Parquet file for
    reading, lists no part folder after the first record, and reads as few bytes at 300 trials as at 10."""
    import os

    import pyarrow.dataset as ds

    from analysis import parts

    store = ResultsStore(tmp_path / "s")
    rows = [trial_row("s", _spec(f"t{i:04d}", lr=0.001 * (i + 1)), _hist(20), "ok") for i in range(320)]
    store.record([rows[0]], {"t0000": _hist(20)})  # the first record finds the last seq (one listing)
    opened = []
    for name in ("read_table", "ParquetFile", "read_schema", "read_metadata"):
        real = getattr(pq, name)
        monkeypatch.setattr(pq, name, lambda *a, _real=real, _n=name, **k: opened.append(_n) or _real(*a, **k))
    monkeypatch.setattr(ds, "dataset", lambda *a, **k: opened.append("dataset") or None)
    real_listdir = os.listdir
    monkeypatch.setattr(parts.os, "listdir", lambda *a: opened.append("listdir") or real_listdir(*a))
    read_at = {}
    for i, row in enumerate(rows[1:], start=1):
        before = _read_bytes()
        store.record([row], {row["trial_id"]: _hist(20)})
        if i in (10, 300):
            read_at[i] = _read_bytes() - before
    assert opened == []
    assert read_at[300] <= read_at[10] + 4096, read_at  # bytes read by the process (page cache included)
    monkeypatch.undo()
    assert len(store.trials()) == 320 and len(store.history()) == 320 * 20
    assert store.history().memory_usage().sum() > 50 * read_at[300] + 100_000  # the table dwarfs what a record read


CHILD = """
import sys
from orchestrator.stores.results_store import ResultsStore, trial_row
sys.path.insert(0, {tests!r})
from test_results_store import _hist, _spec
store = ResultsStore({d!r})
i = 0
while True:
    tid = f"t{{i % 40:03d}}"  # ids come round again: a trial recorded again replaces its rows
    store.record([trial_row("s", _spec(tid, lr=0.01 * (i + 1)), _hist(3, i + 1.0), "ok")], {{tid: _hist(3, i + 1.0)}})
    print(i, flush=True)
    if i % 7 == 6:
        store.compact()
    i += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [9, 23, 38])
def test_sigkill_while_recording_and_compacting_never_loses_or_duplicates_a_trial(tmp_path, kill_after):
    """A real process records trials (ids repeat) and compacts every 7 records; it is SIGKILLed at
    some point, possibly inside a write or a compaction. Every record it reported done is there, once,
    with its last values; a compaction after the crash changes nothing that a reader sees."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    code = CHILD.format(tests=str(Path(__file__).resolve().parent), d=str(tmp_path / "s"))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    done = -1
    for line in proc.stdout:
        done = int(line)
        if done >= kill_after:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done >= kill_after, "the child stopped on its own"
    store = ResultsStore(tmp_path / "s")
    want = {}
    for i in range(done + 1):
        want[f"t{i % 40:03d}"] = i + 1.0  # the last value each id was recorded with
    for _ in range(2):  # as the crash left it, then after a compaction
        trials, hist = store.trials(), store.history()
        assert trials.trial_id.is_unique and not hist.duplicated(["trial_id", "epoch"]).any()
        got = trials.set_index("trial_id").final_train_loss
        for tid, v in want.items():  # a record in flight at the kill may be there too, never an older value
            assert got[tid] == pytest.approx(v / 3) or got[tid] == pytest.approx((v + 40) / 3), tid
        assert (hist.groupby("trial_id").size() == 3).all()
        store.compact()
