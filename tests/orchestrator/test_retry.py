"""A trial that raises in its set-up is recorded ``failed`` after one attempt; a killed worker is retried.

Slow: one real `mutransfer sweep` on embedded Ray (about 30-60 s on 2 busy CPUs).
"""

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: retry
trainer: {algorithm: bp, depth: 3, base_width: 16, width: 16}
data: {dataset: teacher, subset: 256, test_subset: 64}
train: {epochs: 2, batch_size: 64}
grid: {lr: [0.0625, 0.125, 0.25]}
max_failures: 2
resources: {cpu: 1}
"""


def test_setup_error_fails_once_while_a_killed_worker_is_retried(tmp_path, ray_env, run_cli):
    space = tmp_path / "retry.yaml"
    space.write_text(SPACE)
    attempts, marker, results = tmp_path / "setup-attempts", tmp_path / "crashed-once", tmp_path / "results"
    env = dict(ray_env, MUTRANSFER_TEST_SETUP_ERROR=f"0.125:{attempts}", MUTRANSFER_TEST_CRASH_ONCE=str(marker))
    proc = run_cli(["sweep", str(space), "--max-concurrent", "1", "--results", str(results), "--no-mlflow"], env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep ran; one trial failed
    trials = pd.read_parquet(results / "retry" / "trials.parquet").set_index("lr")
    assert len(trials) == 3 and trials.index.is_unique

    bad = trials.loc[0.125]
    assert bad.status == "failed" and bad.retries == 0 and bad.epochs_done == 0
    assert "test hook: set-up of the trial with lr=0.125 fails" in bad.error, bad.error
    assert len(attempts.read_text().splitlines()) == 1  # one attempt, although max_failures is 2

    assert marker.exists()  # a worker died once after its first epoch (os._exit) ...
    good = trials.drop(index=0.125)
    assert (good.status == "ok").all() and (good.epochs_done == 2).all()
    assert sorted(good.retries) == [0, 1]  # ... and that trial was run again, to the end
    assert set(good.device_used) == {"cpu"}  # device auto, no GPU given: the record says CPU
    assert set(good.matmul_backend) <= {"torch", "onednn", "onednn+torch"} and "" not in set(good.matmul_backend)
    assert "retries 1" in proc.stderr and "failed 1" in proc.stderr
    # Tune prints the lost worker's traceback (a retriable error), never one for the set-up error
    assert "RuntimeError: test hook" not in proc.stderr and proc.stderr.count("Traceback") <= 1
