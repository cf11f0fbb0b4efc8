"""The live progress view: counts by status, best so far, throughput and ETA, terminal and plain modes."""

import io

import pytest

from orchestrator.engine.progress import Progress, duration


def test_progress_counts_and_best_so_far():
    out = io.StringIO()
    p = Progress(total=5, skipped=1, metric="final_test_loss", mode="min", stream=out, min_interval=0)
    p.started("a")
    p.started("b")
    assert "running 2" in p.line() and "[1/5 20%]" in p.line()
    p.finished("a", "ok", {"final_test_loss": 0.5, "width": 64, "lr": 0.1})
    p.finished("b", "diverged", {"final_test_loss": float("inf"), "width": 64, "lr": 8.0})
    p.started("c")
    p.finished("c", "ok", {"final_test_loss": 0.3, "width": 128, "lr": 0.05})
    p.finished("d", "failed", {"final_test_loss": float("nan")})
    line = p.line()
    assert "[5/5 100%]" in line and "ok 2 diverged 1 failed 1 skipped 1" in line
    assert "running 0" in line and "best final_test_loss 0.3 (width=128 lr=0.05 [c])" in line
    assert "\r" not in out.getvalue()  # not a terminal: whole lines only


def test_progress_max_mode_prefers_larger():
    p = Progress(total=2, metric="final_test_acc", mode="max", stream=io.StringIO())
    p.finished("a", "ok", {"final_test_acc": 0.7, "width": 1, "lr": 1.0})
    p.finished("b", "ok", {"final_test_acc": 0.6, "width": 2, "lr": 1.0})
    assert "best final_test_acc 0.7" in p.line()


@pytest.mark.parametrize("s, text", [(0, "0s"), (59.4, "59s"), (185, "3m05s"), (7620, "2h07m"), (273600, "3d04h")])
def test_duration(s, text):
    assert duration(s) == text


def test_rate_and_eta_from_the_trials_finished_in_this_run():
    p = Progress(total=1000, skipped=100, stream=io.StringIO())
    assert p.eta() is None and "-/min ETA -" in p.line()
    for i in range(300):
        p.finished(str(i), "ok", {"final_train_loss": 1.0, "width": 64, "lr": 0.1})
    now = p.start + 600.0  # 300 trials in 10 minutes (the 100 skipped ones do not count)
    assert p.rate(now) == pytest.approx(30.0)
    assert p.eta(now) == pytest.approx(600 / 30 * 60)  # 600 left at 30/min: 20 minutes
    assert "30/min ETA 20m00s elapsed 10m00s" in p.line(now)


def test_line_stays_short_at_thousands_of_trials():
    p = Progress(total=123456, skipped=4567, stream=io.StringIO())
    for i in range(2000):
        p.finished(
            str(i), ["ok", "diverged", "failed"][i % 3], {"final_train_loss": 0.25 + i, "width": 4096, "lr": 2.0**-7}
        )
    p.retried("x")
    line = p.line(p.start + 98765.0)
    assert "[6567/123456 5%] ok 667 diverged 667 failed 666 skipped 4567 | running 0 retries 1" in line
    assert "1.22/min ETA 66d19h elapsed 1d03h" in line  # 116889 left at 2000 per 98765 s
    assert len(line) < 200


def test_plain_mode_writes_a_line_every_n_trials_and_each_failure_and_retry():
    out = io.StringIO()
    p = Progress(total=1000, stream=out, every=100, interval=1e9)
    p.render(force=True)  # the driver's first line
    for i in range(350):
        p.started(str(i))
        p.finished(str(i), "ok", {"final_train_loss": 1.0, "width": 64, "lr": 0.1})
    p.finished("bad", "failed", {})
    p.retried("again")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    done = [int(line[1:].split("/")[0]) for line in lines]
    # start, every 100 trials, the failure (351), the retry (still 351), nothing more at close
    assert done == [0, 100, 200, 300, 351, 351]
    assert "failed 1" in lines[-2] and "retries 1" in lines[-1]


def test_plain_mode_writes_after_interval_seconds_and_a_final_line_at_close():
    out = io.StringIO()
    p = Progress(total=1000, stream=out, every=10**6, interval=0.0)
    p.finished("a", "ok", {"final_train_loss": 1.0, "width": 64, "lr": 0.1})
    assert len(out.getvalue().splitlines()) == 1  # interval 0: every event is due
    out2 = io.StringIO()
    q = Progress(total=1000, stream=out2, every=10**6, interval=1e9)
    q.render(force=True)
    for i in range(5):
        q.finished(str(i), "ok", {"final_train_loss": 1.0, "width": 64, "lr": 0.1})
    assert len(out2.getvalue().splitlines()) == 1
    q.close()
    assert out2.getvalue().splitlines()[-1].startswith("[5/1000")


def test_terminal_mode_redraws_in_place_within_the_width(monkeypatch):
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((60, 20)))
    out = io.StringIO()
    p = Progress(total=10, stream=out, min_interval=0, tty=True)
    p.finished("a", "ok", {"final_train_loss": 1.0, "width": 64, "lr": 0.1})
    p.close()
    frames = out.getvalue().split("\r\033[K")[1:]
    assert frames and all(len(f.rstrip("\n")) <= 59 for f in frames)
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
