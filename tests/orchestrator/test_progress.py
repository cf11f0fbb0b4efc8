"""The live progress view: counts by status and the best trial so far."""

import io

from orchestrator.progress import Progress


def test_progress_counts_and_best_so_far():
    out = io.StringIO()
    p = Progress(total=5, skipped=1, metric="final_test_loss", mode="min", stream=out, min_interval=0)
    p.started("a")
    p.started("b")
    assert "running 2" in p.line() and "[1/5]" in p.line()
    p.finished("a", "ok", {"final_test_loss": 0.5, "width": 64, "lr": 0.1})
    p.finished("b", "diverged", {"final_test_loss": float("inf"), "width": 64, "lr": 8.0})
    p.started("c")
    p.finished("c", "ok", {"final_test_loss": 0.3, "width": 128, "lr": 0.05})
    p.finished("d", "failed", {"final_test_loss": float("nan")})
    line = p.line()
    assert "[5/5]" in line and "ok 2, diverged 1, skipped 1" in line and "failed 1" in line
    assert "running 0" in line and "best final_test_loss 0.3 (width=128 lr=0.05 [c])" in line
    assert out.getvalue().count("\n") >= 6  # not a terminal: one line per event


def test_progress_max_mode_prefers_larger():
    p = Progress(total=2, metric="final_test_acc", mode="max", stream=io.StringIO())
    p.finished("a", "ok", {"final_test_acc": 0.7, "width": 1, "lr": 1.0})
    p.finished("b", "ok", {"final_test_acc": 0.6, "width": 2, "lr": 1.0})
    assert "best final_test_acc 0.7" in p.line()
