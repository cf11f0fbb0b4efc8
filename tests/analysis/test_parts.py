"""analysis.parts: a table as a base file plus part files, read as one, compacted without loss or duplicates."""

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import parts
from analysis.io import ParquetError, read_parquet, write_parquet_atomic


def _rows(ids, value=1.0):
    return pd.DataFrame(
        {"trial_id": list(ids), "status": ["ok"] * len(ids), "loss": [value] * len(ids), "width": [16] * len(ids)}
    )


def _write(base, seq, ids, value=1.0):
    return parts.write_part(_rows(ids, value), base, seq)


def test_parts_read_as_one_table_newest_source_wins_and_the_old_layout_reads_as_before(tmp_path):
    base = tmp_path / "trials.parquet"
    old = _rows(["a", "b", "c"])
    write_parquet_atomic(old, base)  # the single-file layout: read exactly as read_parquet reads it
    pd.testing.assert_frame_equal(parts.read_table(base), read_parquet(base))
    _write(base, 10, ["b"], 2.0)
    _write(base, 11, ["d"], 3.0)
    _write(base, 12, ["b"], 4.0)  # recorded again: replaces both older versions
    got = parts.read_table(base)
    assert list(got.trial_id) == ["a", "c", "d", "b"] and got.set_index("trial_id").loss.to_dict() == {
        "a": 1.0,
        "c": 1.0,
        "d": 3.0,
        "b": 4.0,
    }
    assert [p.name.split("-")[1] for p in parts.list_parts(base)] == [f"{s:020d}" for s in (10, 11, 12)]
    # a part alone (no base yet), and a column only some parts have: null where missing
    lone = tmp_path / "lone.parquet"
    parts.write_part(_rows(["x"]), lone, 1)
    parts.write_part(_rows(["y"]).assign(error="boom"), lone, 2)
    t = parts.read_table(lone)
    assert list(t.trial_id) == ["x", "y"] and pd.isna(t.error[0]) and t.error[1] == "boom"
    assert parts.read_table(tmp_path / "none.parquet").empty and not parts.has_table(tmp_path / "none.parquet")


def test_compaction_keeps_the_table_marks_the_base_and_removes_the_parts(tmp_path):
    base = tmp_path / "trials.parquet"
    write_parquet_atomic(_rows(["a", "b"]), base)
    _write(base, 5, ["b", "c"], 2.0)
    _write(base, 6, ["d"], 3.0)
    before = parts.read_table(base)
    assert parts.compact(base) == 2
    pd.testing.assert_frame_equal(parts.read_table(base), before)
    pd.testing.assert_frame_equal(read_parquet(base), before)  # the base alone is now the whole table
    assert parts.watermark(base) == 6 and not parts.parts_dir(base).exists()
    assert parts.compact(base) == 0


def _snapshot(base):
    t = parts.read_table(base)
    return t.sort_values("trial_id").reset_index(drop=True)


@pytest.mark.parametrize("crash_after", range(5))
def test_a_crash_at_any_step_of_compaction_neither_loses_nor_duplicates(tmp_path, monkeypatch, crash_after):
    """Steps: write the new base (0), then delete the 4 parts one by one (1..4); crash after ``crash_after``."""
    base = tmp_path / "trials.parquet"
    write_parquet_atomic(_rows(["a"]), base)
    for seq, (ids, v) in enumerate([(["b"], 2.0), (["a", "c"], 3.0), (["b"], 4.0), (["d"], 5.0)], start=1):
        _write(base, seq, ids, v)
    want = _snapshot(base)
    steps = {"n": 0}
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if steps["n"] >= crash_after:
            raise KeyboardInterrupt("killed")
        real_unlink(self, missing_ok=missing_ok)
        steps["n"] += 1

    monkeypatch.setattr(Path, "unlink", unlink)
    if crash_after < 4:
        with pytest.raises(KeyboardInterrupt):
            parts.compact(base)
    monkeypatch.undo()
    got = _snapshot(base)
    pd.testing.assert_frame_equal(got, want)
    assert got.trial_id.is_unique
    # a part written after the crash is newer than the new base; the next compaction keeps it and cleans up
    _write(base, parts.next_seq(4), ["a"], 9.0)
    parts.compact(base)
    assert not parts.list_parts(base)
    final = _snapshot(base)
    assert final.trial_id.tolist() == ["a", "b", "c", "d"] and final.loss.tolist() == [9.0, 4.0, 3.0, 5.0]


def test_a_crash_while_the_new_base_is_written_leaves_base_and_parts_as_they_were(tmp_path, monkeypatch):
    base = tmp_path / "trials.parquet"
    write_parquet_atomic(_rows(["a"]), base)
    _write(base, 1, ["b"], 2.0)
    want = _snapshot(base)

    def half_write(table, where, **kw):
        where.write(b"PAR1 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        parts.compact(base)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(_snapshot(base), want)
    assert len(parts.list_parts(base)) == 1 and not [p for p in tmp_path.rglob("*.tmp")]


def test_a_reader_that_meets_a_compaction_reads_again(tmp_path, monkeypatch):
    """The interleaving: the reader has the old base, a compaction replaces it and deletes the parts,
    then the reader lists the parts: it must not return the old base without them."""
    base = tmp_path / "trials.parquet"
    write_parquet_atomic(_rows(["a"]), base)
    _write(base, 1, ["b"], 2.0)
    _write(base, 2, ["a"], 3.0)
    want = _snapshot(base)
    real = parts.list_parts
    calls = {"n": 0}

    def list_after_compaction(b):
        calls["n"] += 1
        if calls["n"] == 1:  # between the reader's base and its listing
            monkeypatch.setattr(parts, "list_parts", real)
            parts.compact(base)
            monkeypatch.setattr(parts, "list_parts", list_after_compaction)
        return real(b)

    monkeypatch.setattr(parts, "list_parts", list_after_compaction)
    pd.testing.assert_frame_equal(_snapshot(base), want)
    assert calls["n"] >= 2  # it read again


def test_marker_rows_hide_a_keys_older_rows_and_are_dropped(tmp_path):
    import pyarrow as pa

    base = tmp_path / "history.parquet"
    hist = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1], "loss": [1.0, 0.5, 2.0]})
    write_parquet_atomic(hist, base)
    parts.write_part(pa.table({"trial_id": ["a"], "epoch": pa.nulls(1, pa.int64())}), base, 1)
    got = parts.read_table(base, "trial_id", ("trial_id", "epoch"), marker="epoch")
    assert got.trial_id.tolist() == ["b"] and got.epoch.dtype == "int64"
    parts.compact(base, "trial_id", ("trial_id", "epoch"), marker="epoch")
    assert read_parquet(base).trial_id.tolist() == ["b"]


def test_a_corrupt_part_is_named(tmp_path):
    base = tmp_path / "trials.parquet"
    _write(base, 1, ["a"])
    bad = parts.parts_dir(base) / f"part-{2:020d}-0000beef.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ParquetError, match="part-00000000000000000002-0000beef.parquet"):
        parts.read_table(base)
    os.unlink(bad)
    assert parts.read_table(base).trial_id.tolist() == ["a"]
