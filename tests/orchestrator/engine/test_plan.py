"""--dry-run (orchestrator/engine/plan.py): counts per axis, what is recorded, the cost estimate; nothing written."""

import hashlib
import json
import os
import re
import socket
import textwrap
from pathlib import Path

import pytest

from orchestrator.engine import priors
from orchestrator.engine.plan import CostModel, axis_counts, cost_key, sweep_plan, verify_plan
from orchestrator.spec.config import load_sweep, to_yaml
from orchestrator.stores.results_store import ResultsStore, trial_row

VERIFY = """
name: vtiny
trainer: {depth: 3, inference_steps: 3, activation: tanh, base_width: 16}
data: {dataset: teacher, subset: 256, test_subset: 128}
train: {epochs: 2, batch_size: 64}
grid:
  algorithm: [bp, pc]
  parametrization: [sp, mup]
  width: [16, 32, 64]
search: {trials: 5}
verify: {bracket: [-1, 0, 1], seeds: 2, max_extend: 2, resolution: 0.5}
resources: {cpu: 1}
"""


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash and mtime."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _record(sweep, results: Path, n: int, wall: float) -> None:
    """Record the first ``n`` trials of ``sweep`` as ok on this host, each taking ``wall`` seconds."""
    store = ResultsStore(results / sweep.name)
    store.write_config(to_yaml(sweep))
    rows, hist = [], {}
    for t in sweep.trials[:n]:
        h = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "wall_s": wall, "diverged": False}]
        rows.append(trial_row(sweep.name, t.to_dict(), h, "ok", hostname=socket.gethostname()))
        hist[t.trial_id] = h
    store.record(rows, hist)


def test_axis_counts_and_cost_key_ignore_lr_seed_and_parametrization(tiny_space):
    sweep = load_sweep(tiny_space, ["grid.parametrization=[sp,mup]"])
    assert axis_counts(sweep) == [("width", 2), ("lr", 4), ("parametrization", 2)]
    keys = {cost_key(t.trainer) for t in sweep.trials}
    assert len(keys) == 2  # one per width


def test_sweep_plan_counts_recorded_trials_and_estimates_from_them(tiny_space, tmp_path):
    sweep = load_sweep(tiny_space)
    results = tmp_path / "results"
    _record(sweep, results, 3, wall=2.5)  # width 16: lr 1/64, 1/16, 1/4 recorded at 2.5 s each
    before = _snapshot(results)
    lines = sweep_plan(sweep, results, calibrate=False)
    text = "\n".join(lines)
    assert "name: tiny" in text and "lr:" in text  # the resolved config as YAML
    assert "trials: width 2 x lr 4 = 8" in text
    assert f"in {results / 'tiny'}: 3; to run: 5" in text
    assert "resources per trial: cpu 1, gpu 0" in text
    # width 16's remaining trial costs the recorded median; width 32 has no record and no calibration
    assert "estimated cost of the trials to run: unknown" in text
    model = CostModel([ResultsStore(results / "tiny").trials()], calibrate=False)
    assert model.total(sweep.trials[3:4]) == pytest.approx(2.5)
    assert model.trial_seconds(sweep.trials[4]) is None  # width 32
    assert _snapshot(results) == before


def test_sweep_plan_calibrates_what_no_record_covers(tiny_space, tmp_path):
    sweep = load_sweep(tiny_space)
    text = "\n".join(sweep_plan(sweep, tmp_path / "results"))
    assert "to run: 8" in text and "2 kind(s) calibrated here" in text
    cost = float(text.split("estimated cost of the trials to run: ~")[1].split(" ")[0])
    assert 0 <= cost < 60
    assert not (tmp_path / "results").exists()


def test_sweep_dry_run_cli_exits_0_and_writes_nothing(tiny_space, tmp_path, run_cli):
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    env.pop("MLFLOW_TRACKING_URI", None)
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_cli(
        [
            "sweep",
            str(tiny_space),
            "--dry-run",
            "--results",
            str(tmp_path / "res"),
            "train.epochs=2",
            "grid.lr=[0.015625,0.0625,0.25,256.0]",
        ],
        env,
        timeout=300,
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trials: width 2 x lr 4 = 8" in proc.stdout and "to run: 8" in proc.stdout
    # the command to run it, overrides last and quoted for any shell (zsh refuses unquoted brackets)
    assert (
        f"next: mutransfer sweep {tiny_space} train.epochs=2 'grid.lr=[0.015625,0.0625,0.25,256.0]' --results {tmp_path / 'res'}"
        in proc.stdout
    )
    assert not (tmp_path / "res").exists() and list(work.iterdir()) == []  # no results, no mlruns, no Ray dir


def test_dry_run_refuses_what_the_run_would_refuse(tiny_space, tmp_path, run_cli):
    results = tmp_path / "results"
    _record(load_sweep(tiny_space, ["train.epochs=3"]), results, 1, wall=1.0)  # a different sweep named tiny
    before = _snapshot(results)
    proc = run_cli(["sweep", str(tiny_space), "--dry-run", "--results", str(results)], dict(os.environ), timeout=300)
    assert proc.returncode == 2 and "train.epochs=2 (was 3)" in proc.stderr and "another sweep" in proc.stderr
    assert "Traceback" not in proc.stderr and _snapshot(results) == before


def test_verify_plan_counts_search_bracket_and_bounds_refinement(tmp_path):
    space = tmp_path / "vtiny.yaml"
    space.write_text(textwrap.dedent(VERIFY))
    sweep = load_sweep(space)
    text = "\n".join(verify_plan(sweep, tmp_path / "results"))
    # 2 algorithms x 2 parametrizations x 3 widths x 2 seeds (verify.seeds) = 24 points
    assert "algorithm 2 x parametrization 2 x width 3 x seed 2 = 24 points (seeds from verify.seeds)" in text
    assert "tune-base: 2 Optuna studies x 5 trials = 10 at the base width" in text
    assert "= 72 trials; already recorded: not known until tune-base" in text  # 24 points x 3 lrs
    # rounds: 1 + max_extend 2 + halvings 1 + 2 = 6 -> 5 after the bracket, at most 3 lrs per point each
    assert "at most 5 rounds" in text and "at most 360 more trials" in text
    # expected: 2 x 1 halving + priors.REFINE_EXTRA per point (measured on the committed studies)
    assert f"at most 360 more trials; expected ~{round(24 * (2 + priors.REFINE_EXTRA))}" in text
    # adaptive seeding: looks at 2, 5, 8 seeds; 12 points per seed, each at most 3 + 5 x 3 trials
    assert "up to 6 more seeds (looks at 2, 5, 8 seeds; verify.max_seeds, seed_step): at most 1296 more trials" in text
    assert "adaptive seeding: none" in "\n".join(verify_plan(load_sweep(space, ["verify.max_seeds=2"]), tmp_path / "r"))
    assert "calibrated here" in text and "unknown" not in text
    # no run on this host measured real / calibrated: the calibration is scaled by the committed studies' spend
    assert f"x {priors.SPEND:.2f}, the share of an undiverged trial's seconds" in text
    assert not (tmp_path / "results").exists()


def test_verify_plan_counts_the_recorded_bracket_once_base_lr_json_is_there(tmp_path):
    """The committed demo (docs/demo_cpu: its base_lr.json and 884 trials) holds the whole bracket."""
    import shutil

    root = Path(__file__).resolve().parents[3]
    shutil.copytree(root / "docs" / "demo_cpu", tmp_path / "results" / "demo", ignore=shutil.ignore_patterns("report"))
    before = _snapshot(tmp_path / "results")
    text = "\n".join(
        verify_plan(load_sweep(root / "search_spaces" / "demo.yaml"), tmp_path / "results", calibrate=False)
    )
    assert "72 (group, width, parametrization, seed) points x 5 learning rates" in text
    assert "= 360 trials; already recorded: 360 (η*_base from base_lr.json)" in text
    # a finished verify: the replay of its rounds finds every trial recorded, so nothing more is planned
    assert "every round's trials are recorded" in text and "at most" not in text.split("# the plan:")[1]
    assert "estimated cost of the round to run: ~0 trial-seconds" in text
    assert _snapshot(tmp_path / "results") == before


def test_sweep_plan_has_a_wall_time_and_plans_a_gpu_sweep_here(tiny_space, tmp_path):
    """The wall time counts start-up; a GPU sweep is planned (not refused) on a machine without one."""
    text = "\n".join(sweep_plan(load_sweep(tiny_space), tmp_path / "r"))
    assert re.search(r"expected wall time: ~\d+s on 2 slot\(s\), start-up included", text)
    gpu = "\n".join(sweep_plan(load_sweep(tiny_space, ["resources.gpu=1", "trainer.device=cuda"]), tmp_path / "r"))
    assert "planned for a cluster" in gpu and "expected wall time" in gpu
    assert "an upper bound for a GPU" in gpu


@pytest.fixture(autouse=True)
def _no_overheads_cache(tmp_path, monkeypatch):
    """Plans here read no per-host cache but their own (orchestrator.engine.overheads.cache_path)."""
    monkeypatch.setenv("MUTRANSFER_OVERHEADS", str(tmp_path / "overheads.json"))


def test_sweep_plan_uses_the_overheads_measured_on_this_host(tiny_space, tmp_path):
    """With a cache entry of this host the wall time is its start-up, lead, tail and per-trial seconds."""
    sweep = load_sweep(tiny_space)
    results = tmp_path / "results"
    _record(sweep, results, 5, wall=2.5)  # width 16 all recorded; width 32: 1 of 4, so 3 to run at 2.5 s
    assumed = "\n".join(sweep_plan(sweep, results, max_concurrent=1, calibrate=False))
    assert "start-up and overheads assumed" in assumed
    run = {"dir": "/x", "host": socket.gethostname(), "stage_started": 1.0, "pre_s": 30.0, "post_s": 6.0}
    run.update(lead_s=10.0, tail_s=3.0, per_trial_s=4.5, round_gaps=[], calibration_ratio=0.5)
    other = {**run, "host": "another-host", "pre_s": 999.0}
    Path(os.environ["MUTRANSFER_OVERHEADS"]).write_text(json.dumps([run, other]))
    text = "\n".join(sweep_plan(sweep, results, max_concurrent=1, calibrate=False))
    # 30 + 6 (command) + 10 + 3 (the Tune run's lead and tail) + 3 x (2.5 + 4.5) (trials on one slot) = 70 s
    assert "expected wall time: ~1m10s on 1 slot(s)" in text
    assert "start-up from 1 earlier run(s) on this host" in text
    model = CostModel(calibrate=True, ratio=0.5)
    seconds = model.trial_seconds(sweep.trials[0])
    assert seconds == pytest.approx(0.5 * model.calibrated[cost_key(sweep.trials[0].trainer)])
