"""The fault suite's driver rows (opt-in: ``MUTRANSFER_FAULT_SUITE=1``, ``make fault-suite``; minutes).

A verify SIGKILLed during its tune-base and rerun reaches the same base_lr.json and the same verdict
table as an uninterrupted verify: the learning rates tune-base asks depend only on the study's seed
and the trials before them (orchestrator.studies.base_study), never on when the driver died.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from orchestrator.stores.results_store import ResultsStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("MUTRANSFER_FAULT_SUITE"), reason="opt-in: MUTRANSFER_FAULT_SUITE=1"),
]

SPACE = """
name: killed
trainer: {algorithm: bp, optimizer: sgd, loss: mse, depth: 3, activation: tanh, base_width: 32}
data: {dataset: teacher, subset: 1024, test_subset: 256}
train: {epochs: 2, batch_size: 64}
grid:
  parametrization: [sp, mup]
  width: [32, 64, 128]
objective: {metric: final_train_loss, mode: min}
search: {space: {lr: {low: 2.0e-3, high: 1.0, log: true}}, trials: 8, batch: 2, seed: 0}
verify: {bracket: [-1, 0, 1], resolution: 1.0, seeds: 1, max_seeds: 1, find_edge: false}
resources: {cpu: 1}
"""


def _verify(space, results, env, **kw):
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "verify",
        str(space),
        "--results",
        str(results),
        "--no-mlflow",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _outcome(results):
    base = json.loads((results / "killed" / "base_lr.json").read_text())
    best = [(g["best"], g["best_value"], g["trial_ids"]) for g in base["groups"]]
    summary = json.loads((results / "killed" / "report" / "summary.json").read_text())
    verdicts = [(g["parametrization"], g["verdict"], g["drift_exponent"]) for g in summary["groups"]]
    return best, verdicts


def test_a_verify_killed_in_tune_base_reaches_the_uninterrupted_base_lr_and_verdict(tmp_path, ray_env):
    space = tmp_path / "killed.yaml"
    space.write_text(textwrap.dedent(SPACE))
    whole = _verify(space, tmp_path / "whole", ray_env)
    whole.communicate(timeout=1200)
    assert whole.returncode in (0, 1, 3)

    results = tmp_path / "cut"
    first = _verify(space, results, ray_env)
    parts = results / "killed" / "base" / "trials"
    t0 = time.monotonic()
    while not (parts.is_dir() and len(list(parts.iterdir())) >= 3) and time.monotonic() - t0 < 600:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # mid-search: a round's trials partly recorded
    first.communicate(timeout=60)
    assert not (results / "killed" / "base_lr.json").exists(), "killed too late: tune-base had finished"
    again = _verify(space, results, ray_env)
    out, err = again.communicate(timeout=1200)
    assert again.returncode in (0, 1, 3), err[-2000:]
    assert _outcome(results) == _outcome(tmp_path / "whole")
    base = ResultsStore(results / "killed" / "base").trials()
    assert len(base) == base.trial_id.nunique()
