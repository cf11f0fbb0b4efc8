"""`mutransfer status` (orchestrator/cli/cmd_status.py) and the status JSON the progress line leaves."""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli.cmd_status import status_lines
from orchestrator.engine.progress import Progress
from orchestrator.errors import BadInput


def test_progress_writes_status_json_that_status_reads(tmp_path):
    """A live driver's status.json (this process holds the lock) gives running, total and ETA; closed, it does not."""
    d = tmp_path / "sw"
    d.mkdir()
    (d / ".lock").write_text(
        json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "command": "mutransfer sweep"})
    )
    p = Progress(total=4, stream=io.StringIO(), status_path=d / "status.json", status_interval=0)
    p.started("a")
    p.started("b")
    p.finished("a", "ok", {"final_train_loss": 0.5, "width": 8, "lr": 0.1})
    st = json.loads((d / "status.json").read_text())
    assert st["state"] == "running" and st["total"] == 4 and st["done"] == 1 and st["running"] == 1
    assert st["pid"] == os.getpid() and st["eta_s"] is not None
    text = "\n".join(status_lines(d))
    assert "running: mutransfer sweep" in text and "done 0 of 4" in text  # nothing in Parquet yet
    assert "running 1, retries 0" in text and "ETA" in text
    p.close()
    assert json.loads((d / "status.json").read_text())["state"] == "closed"
    (d / ".lock").unlink()
    text = "\n".join(status_lines(d))
    assert "no driver holds it" in text and "running 1" not in text and f"next: mutransfer analyze {d}" in text


def test_status_of_no_sweep_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not a sweep's results directory"):
        status_lines(tmp_path / "nothing")


@pytest.mark.slow
def test_plan_and_status_of_a_running_sweep(tiny_space, tmp_path, ray_env, run_cli):
    """One real small sweep: its --dry-run states an expected wall time (how close it comes is measured in
    benchmarks/demo_bench.py, not asserted here: no timed assertions in tests); `status` from another
    process says it runs while it does, and the final counts after."""
    results = tmp_path / "res"
    args = [str(tiny_space), "train.epochs=6", "--results", str(results), "--no-mlflow"]
    plan = run_cli(["sweep", *args, "--dry-run"], ray_env, timeout=300)
    assert plan.returncode == 0, plan.stderr
    m = re.search(r"expected wall time: ~(?:(\d+)m)?(\d+)s", plan.stdout)
    planned = 60 * int(m.group(1) or 0) + int(m.group(2))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", *args],
        env=ray_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        while proc.poll() is None:
            if (results / "tiny" / ".lock").exists():
                st = run_cli(["status", str(results / "tiny")], ray_env, timeout=120)
                if st.returncode == 0 and "running: mutransfer sweep" in st.stdout:
                    seen.append(st.stdout)
                    break
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - t0
    assert proc.returncode == 0, out
    assert seen and f"pid {proc.pid}" in seen[0], seen
    assert planned > 0 and wall > 0
    after = run_cli(["status", str(results / "tiny")], ray_env, timeout=120)
    assert after.returncode == 0 and "no driver holds it" in after.stdout
    assert "done 8 of 8" in after.stdout and f"next: mutransfer analyze {results / 'tiny'}" in after.stdout
    assert f"next: mutransfer analyze {results / 'tiny'}" in out and f"mutransfer ui --results {results}" in out
    # the command remembered its real overheads for later plans (engine/overheads.py; tests' own cache file)
    from orchestrator.engine.overheads import load_cache

    mine = [r for r in load_cache(ray_env["MUTRANSFER_OVERHEADS"]) if Path(r.dir) == (results / "tiny").resolve()]
    assert len(mine) == 1 and mine[0].pre_s is not None and 0 < mine[0].pre_s < wall, mine


def test_status_counts_only_the_grid_and_names_what_lies_outside(tiny_space, tmp_path):
    """A grid narrowed after a run (growth keeps every recorded trial): status counts the trials of the
    current sweep.yaml and names the recorded ones outside it, never "done 8 of 4"."""
    from orchestrator.spec.config import load_sweep, to_yaml
    from orchestrator.stores.results_store import ResultsStore, trial_row

    wide = load_sweep(tiny_space)  # 2 widths x 4 lrs
    narrow = load_sweep(tiny_space, ["grid.width=[16]"])  # the same sweep, one width
    hist = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "wall_s": 1.0, "diverged": False}]
    store = ResultsStore(tmp_path / "tiny")
    rows = [trial_row("tiny", t.to_dict(), hist, "ok") for t in wide.trials]
    store.record(rows, {t.trial_id: hist for t in wide.trials})
    store.write_config(to_yaml(narrow))
    text = "\n".join(status_lines(tmp_path / "tiny"))
    assert "done 4 of 4 (ok 4, diverged 0)" in text, text
    assert "+4 recorded outside this sweep.yaml's grid" in text, text
    store.write_config(to_yaml(wide))
    text = "\n".join(status_lines(tmp_path / "tiny"))
    assert "done 8 of 8" in text and "outside" not in text, text
