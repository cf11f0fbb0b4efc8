"""The sweep lock: one driver per sweep directory; a dead holder's lock on this host is taken over."""

import json
import socket
import subprocess
import sys

import pytest

from orchestrator.engine.lock import LOCK_NAME, SweepLock
from orchestrator.errors import BadInput


def test_a_second_driver_is_refused_with_the_holder_named(tmp_path):
    with SweepLock(tmp_path / "s", "mutransfer sweep"):
        holder = json.loads((tmp_path / "s" / LOCK_NAME).read_text())
        with pytest.raises(BadInput) as err:
            SweepLock(tmp_path / "s", "mutransfer verify").acquire()
    msg = str(err.value)
    assert f"pid {holder['pid']} on host {socket.gethostname()}" in msg and "mutransfer sweep" in msg
    assert "\n" not in msg
    assert not (tmp_path / "s" / LOCK_NAME).exists()  # released


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": "x"}))
    lock = SweepLock(tmp_path, "mutransfer sweep")
    lock.acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != int(dead.stdout)
    lock.release()


def test_a_reused_pid_does_not_keep_a_dead_holder_alive(tmp_path):
    import os

    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": -5.0, "since": "x"})
    )
    with SweepLock(tmp_path, "mutransfer sweep"):  # the parent started at another time than the holder did
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()  # taken over


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "node-7", "pid": 1, "since": "2026-12-07 10:00:00 UTC"}))
    with pytest.raises(BadInput) as err:
        SweepLock(tmp_path, "mutransfer verify").acquire()
    assert "host node-7, since 2026-12-07 10:00:00 UTC" in str(err.value)
    assert "remove this file" in str(err.value)
    assert (tmp_path / LOCK_NAME).exists()


def test_release_leaves_a_lock_taken_by_another_driver(tmp_path):
    lock = SweepLock(tmp_path, "a")
    lock.acquire()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_compact_waits_for_no_driver_it_refuses_while_one_holds_the_sweep(tmp_path, capsys):
    from orchestrator.cli.main import main
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(tmp_path / "s")
    store.record([{"trial_id": "a", "sweep": "s", "status": "ok", "lr": 0.1}], {"a": [{"epoch": 1, "train_loss": 1.0}]})
    with SweepLock(tmp_path / "s", "mutransfer sweep"):
        assert main(["compact", str(tmp_path / "s")]) == 2
    assert "this sweep is in use by mutransfer sweep" in capsys.readouterr().err
    assert (tmp_path / "s" / "trials").is_dir()  # nothing folded under the running driver
    assert main(["compact", str(tmp_path / "s")]) == 0
    assert not (tmp_path / "s" / "trials").exists() and not (tmp_path / "s" / LOCK_NAME).exists()
