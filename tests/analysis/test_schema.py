"""analysis.schema: one home for the results contract, the one the writer, the readers and
docs/ARCHITECTURE.md all state."""

import re
from pathlib import Path

import pytest

from analysis import io, load, schema

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()


def _doc_list(after: str) -> list[str]:
    """The backticked comma list that follows ``after`` in ARCHITECTURE.md (line breaks joined)."""
    text = " ".join(DOC[DOC.index(after) :].split())
    return [c.strip() for c in re.search(r"`([a-z_, ]+)`", text).group(1).split(",")]


def test_the_architecture_doc_states_the_columns_of_the_schema():
    assert _doc_list("`trials.parquet`, one row per trial") == schema.TRIAL_COLUMNS
    assert _doc_list("`history.parquet`, one row per") == schema.HISTORY_COLUMNS
    for name in (
        schema.TAG_SWEEP,
        schema.TAG_ROLE,
        schema.TAG_TRIAL,
        schema.TAG_STATUS,
        *schema.STATUSES,
        schema.DEFAULT_OBJECTIVE_METRIC,
        schema.DEFAULT_METRIC,
    ):
        assert f"`{name}" in DOC or f"{name}`" in DOC, name


def test_writer_and_readers_use_the_schema_objects():
    from orchestrator.spec import config
    from orchestrator.stores import results_store, tracking

    assert results_store.TRIAL_COLUMNS is schema.TRIAL_COLUMNS
    assert results_store.HISTORY_COLUMNS is schema.HISTORY_COLUMNS
    assert results_store.DONE_STATUSES is schema.DONE_STATUSES
    assert tracking.FINAL_METRICS is load.FINAL_METRICS is schema.FINAL_METRICS
    assert tracking.TAG_SWEEP == schema.TAG_SWEEP and load.DEFAULT_OBJECTIVE is schema.DEFAULT_OBJECTIVE
    assert config.SweepConfig().metric == schema.DEFAULT_METRIC and set(config.METRICS) == set(schema.EPOCH_METRICS)
    assert set(tracking.NOT_PARAMS) == set(schema.RESULT_COLUMNS) | set(schema.TAG_COLUMNS)


def test_tracking_uri_writer_default_and_reader_search(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    assert schema.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert schema.tracking_uri(sweep_dir, existing_only=True) is None
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert schema.tracking_uri(sweep_dir, existing_only=True) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert schema.tracking_uri(sweep_dir, "http://h:1", existing_only=True) == "http://h:1"


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = io.write_text_atomic("old\n", tmp_path / "a.txt")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.write_atomic(path, broken)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    io.write_json_atomic({"x": 1}, path)
    assert path.read_text() == '{\n  "x": 1\n}\n'


def test_final_names():
    assert schema.final("test_loss") == "final_test_loss" and schema.final("final_test_acc") == "final_test_acc"
