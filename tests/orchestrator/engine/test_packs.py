"""Trials in packs (issue 27) and a lost worker counted once (issue 28).

The pure pack-forming and the callback's bookkeeping are fast; the Ray tests (slow) run
``tune_runner.run_trials`` on embedded Ray in this process with the real Recorder and ResultsStore,
and kill workers through the test hooks of ``orchestrator.engine.tune_runner`` (armed by deleting a marker).
"""

import io
import os
import shutil
import tempfile
import textwrap
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from orchestrator.engine import packs
from orchestrator.spec.config import load_sweep

LOSSES = ["train_loss", "test_loss", "test_acc", "sgd_steps", "diverged"]


def _spec(tid, lr=0.1, seed=0, width=16, epochs=2, dataset="teacher"):
    trainer = {"algorithm": "bp", "width": width, "depth": 3, "lr": lr, "seed": seed, "parametrization": "mup"}
    data = {"dataset": dataset, "subset": 64, "test_subset": 32}
    return {
        "trial_id": tid,
        "trainer": trainer,
        "data": data,
        "train": {"epochs": epochs, "batch_size": 32},
        "swept": [],
    }


# ---- pure ------------------------------------------------------------------------------
def test_packs_share_their_costly_set_up_and_hold_about_the_target():
    specs = [_spec(f"a{i}", lr=2.0**-i, seed=i % 2) for i in range(10)]  # one kind: lr and seed are free
    specs += [_spec(f"b{i}", width=32, lr=2.0**-i) for i in range(4)]  # another width: another kind
    specs += [_spec("big", width=64)]
    seconds = {s["trial_id"]: 1.0 for s in specs} | {"big": 5.0}
    got = packs.form_packs(specs, seconds, target=3.0, slots=1)
    ids = [[m["trial_id"] for m in p] for p in got]
    assert sorted(i for p in ids for i in p) == sorted(s["trial_id"] for s in specs)  # each spec once
    assert all(len({packs.pack_key(m) for m in p}) == 1 for p in got)  # never two kinds in a pack
    assert ["big"] in ids  # at the target or above: alone
    assert sorted(len(p) for p in ids) == [1, 1, 1, 3, 3, 3, 3]  # big; a0-a8 in threes, a9; b0-b2, b3
    assert ids[0] == ["big"] and ids[1] == ["a0", "a1", "a2"]  # longest first; grid order inside
    assert packs.form_packs(specs, seconds, target=0, slots=1) == [[s] for s in specs if s["trial_id"] == "big"] + [
        [s] for s in specs if s["trial_id"] != "big"
    ]


def test_never_fewer_packs_than_twice_the_slots_and_no_floor_with_zero_slots():
    specs = [_spec(f"a{i}", lr=2.0**-i) for i in range(9)]
    seconds = {s["trial_id"]: 0.01 for s in specs}
    assert len(packs.form_packs(specs, seconds, target=3.0, slots=0)) == 1
    four = packs.form_packs(specs, seconds, target=3.0, slots=2)
    assert sorted(len(p) for p in four) == [2, 2, 2, 3]
    assert len(packs.form_packs(specs, seconds, target=3.0, slots=8)) == 9  # no more packs than trials


def test_pack_id_is_the_trial_id_alone_and_a_stable_hash_of_members():
    a, b = _spec("a"), _spec("b")
    assert packs.pack_id([a]) == "a"
    assert packs.pack_id([a, b]) == packs.pack_id([b, a]) != packs.pack_id([a, _spec("c")])
    assert packs.pack_id([a, b]).startswith("pack-")


def test_estimate_is_the_median_of_recorded_ok_trials_of_the_kind_else_calibrated():
    specs = [_spec("x", lr=0.5), _spec("y", width=32)]
    trials = pd.DataFrame(
        {
            "width": [16, 16, 16, 16, 32],
            "depth": [3] * 5,
            "lr": [0.1, 0.2, 0.3, 0.4, 0.1],
            "status": ["ok", "ok", "ok", "failed", "diverged"],
            "wall_s": [1.0, 2.0, 9.0, 100.0, 50.0],
        }
    )
    est = packs.estimate_seconds(specs, trials)
    assert est["x"] == 2.0  # median of the ok width-16 trials, whatever their lr
    assert 0 < est["y"] < 5.0  # no ok width-32 record: a few steps timed here
    assert packs.estimate_seconds([_spec("z", dataset="no-such-set")], None)["z"] == packs.FALLBACK_SECONDS


# ---- the callback's bookkeeping (no Ray started) -------------------------------------------
class _Events:
    def __init__(self):
        self.log = []

    def __getattr__(self, name):
        return lambda tid, *a: self.log.append((name, tid))


def _trial(members, tid="t1"):
    cfg = {"pack": {"id": packs.pack_id(members), "members": members}}
    return SimpleNamespace(trial_id=tid, config=cfg, error_file=None, get_error=lambda: "actor died")


def test_one_death_reported_twice_is_one_retry_and_requeues_instead_of_failing():
    from orchestrator.engine.tune_runner import MEMBER, PackCallback

    ev = _Events()
    cb = PackCallback(ev, max_failures=2)
    members = [_spec("a"), _spec("b"), _spec("c")]
    t = _trial(members)
    cb.on_trial_start(0, [], t)
    events = [{MEMBER: "a", "member_start": True}, {MEMBER: "a", "epoch": 2, "last": True}]
    cb.on_trial_result(0, [], t, {"events": events + [{MEMBER: "b", "member_start": True}]})
    cb.on_trial_result(0, [], t, {"events": events})  # a finished member's events again: nothing
    cb.on_trial_recover(0, [], t)  # the worker died while b ran
    cb.on_trial_error(0, [], t)  # Tune's second report of the same death, trial re-queued: no retry
    assert ev.log == [("started", "a"), ("result", "a"), ("started", "b"), ("restarted", "b")]
    assert cb.requeued == [(members[1:], 1)]  # b and c run again, one death spent
    # a real last failure: the members not finished are recorded failed
    ev2 = _Events()
    cb2 = PackCallback(ev2, max_failures=0)
    t2 = _trial(members)
    cb2.on_trial_start(0, [], t2)
    cb2.on_trial_result(0, [], t2, {"events": [{MEMBER: "a", "member_start": True}]})
    cb2.on_trial_error(0, [], t2)
    assert ev2.log == [("started", "a"), ("errored", "a"), ("errored", "b"), ("errored", "c")]
    assert cb2.requeued == []


# ---- on Ray --------------------------------------------------------------------------------
SPACE = """
name: packs
trainer: {algorithm: bp, depth: 3, base_width: 16, width: 16}
data: {dataset: teacher, subset: 256, test_subset: 64}
train: {epochs: 2, batch_size: 64}
grid: {lr: LRS, seed: SEEDS}
max_failures: 2
resources: {cpu: 1}
"""
BAD_LR = 0.03125  # its set-up fails (hook), in every test of this module


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    """Embedded Ray (2 CPUs) whose workers carry every hook; each kill hook disarmed until its marker is deleted."""
    from orchestrator.engine import tune_runner

    d = tmp_path_factory.mktemp("hooks")
    marks = {k: d / k for k in ("crash", "start", "member", "idle")}
    for m in marks.values():
        m.touch()
    short = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {
        "RAY_TMPDIR": short,
        "RAY_USAGE_STATS_ENABLED": "0",
        "MUTRANSFER_MATMUL": "torch",  # one product backend in every process: bit-identical runs
        tune_runner.CRASH_ONCE_ENV: str(marks["crash"]),
        tune_runner.KILL_ENV: ",".join(f"{k}:{marks[k]}" for k in ("start", "member", "idle")),
        tune_runner.START_LOG_ENV: str(d / "starts.log"),
        tune_runner.SETUP_ERROR_ENV: f"{BAD_LR}:{d / 'setups.log'}",
    }
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tune_runner.connect()
    try:
        yield SimpleNamespace(marks=marks, starts=d / "starts.log", setups=d / "setups.log")
    finally:
        tune_runner.shutdown()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(short, ignore_errors=True)


def _sweep(tmp_path, lrs, seeds=(0,)):
    path = tmp_path / "packs.yaml"
    path.write_text(textwrap.dedent(SPACE).replace("LRS", str(list(lrs))).replace("SEEDS", str(list(seeds))))
    return load_sweep(path)


def _run(sweep, results, **kw):
    """run_trials over every trial of ``sweep`` into ``results``; (trials, history, progress text)."""
    from orchestrator.engine import tune_runner
    from orchestrator.engine.progress import Progress
    from orchestrator.engine.recorder import Recorder
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(results / sweep.name)
    out = io.StringIO()
    rec = Recorder(sweep, store, None, Progress(len(sweep.trials), stream=out, tty=False))
    tune_runner.run_trials([t.to_dict() for t in sweep.trials], rec, store.dir / "tune", sweep.name, **kw)
    return store.trials(), store.history(), out.getvalue()


def _starts(path):
    return path.read_text().split()[::2] if path.exists() else []


@pytest.mark.slow
def test_packed_and_one_per_trial_runs_are_bit_identical_and_a_diverged_member_spares_its_mates(hooks, tmp_path):
    sweep = _sweep(tmp_path, [1.0e6, 0.25], seeds=[0, 1])  # 1e6 diverges at once, before its pack-mates
    alone, hist_alone, _ = _run(sweep, tmp_path / "alone", pack_seconds=0, max_concurrent=2)
    packed, hist_packed, _ = _run(sweep, tmp_path / "packed", pack_seconds=1e9, slots=0)  # one pack of 4
    assert len(list((tmp_path / "packed" / "packs" / "tune").glob("*/pack-*"))) == 1
    assert len(list((tmp_path / "alone" / "packs" / "tune").glob("*/*/params.json"))) == 4
    for t in (alone, packed):
        assert len(t) == 4 and t.trial_id.is_unique
        assert sorted(t.status) == ["diverged"] * 2 + ["ok"] * 2 and (t.retries == 0).all()
    key = ["trial_id", "epoch"]
    a, p = (h.sort_values(key).reset_index(drop=True) for h in (hist_alone, hist_packed))
    pd.testing.assert_frame_equal(a[key + LOSSES], p[key + LOSSES])  # exactly: the same bits
    cols = ["trial_id", "status", "final_train_loss", "final_test_loss", "epochs_done"]
    pd.testing.assert_frame_equal(
        alone.sort_values("trial_id")[cols].reset_index(drop=True),
        packed.sort_values("trial_id")[cols].reset_index(drop=True),
    )
    assert (packed.wall_s > 0).all() and packed.started_at.is_unique  # each member its own clock


@pytest.mark.slow
def test_a_batched_pack_equals_its_members_trained_one_by_one_to_fp32_rounding(hooks, tmp_path):
    sweep = _sweep(tmp_path, [1.0e6, 0.25, 0.125, 0.0625])  # one seed: a generated dataset is the same for all
    alone, hist_alone, _ = _run(sweep, tmp_path / "alone", pack_seconds=0, max_concurrent=2)
    stacked, hist_stacked, _ = _run(sweep, tmp_path / "stacked", pack_seconds=1e9, slots=0, batched="on")
    # one stacked model: every member starts before any finishes (one by one, each would start when the one
    # before had finished); an order, not a timing
    assert stacked.started_at.max() < stacked.finished_at.min(), stacked[["started_at", "finished_at"]]
    assert (stacked.matmul_backend == "torch").all()
    key = ["trial_id", "epoch"]
    a, b = (h.sort_values(key).reset_index(drop=True) for h in (hist_alone, hist_stacked))
    assert list(a[key].itertuples(index=False)) == list(b[key].itertuples(index=False))
    assert list(a.diverged) == list(b.diverged) and list(a.sgd_steps) == list(b.sgd_steps)
    finite = ~a.diverged.astype(bool)
    for col in ("train_loss", "test_loss"):
        np.testing.assert_allclose(b[col][finite].to_numpy(float), a[col][finite].to_numpy(float), rtol=1e-4)
    assert sorted(stacked.status) == sorted(alone.status) and stacked.trial_id.is_unique


@pytest.mark.slow
def test_a_killed_pack_is_retried_without_rerunning_finished_members(hooks, tmp_path):
    hooks.marks["crash"].unlink()  # the worker dies after the pack's first epoch ...
    hooks.marks["member"].unlink()  # ... and, in the retry, after its first member finished
    hooks.starts.unlink(missing_ok=True)
    sweep = _sweep(tmp_path, [0.0625, BAD_LR, 0.125, 0.25])
    trials, hist, _ = _run(sweep, tmp_path / "r", pack_seconds=1e9, slots=0)  # one pack of 4, max_failures 2
    assert hooks.marks["member"].exists() and hooks.marks["crash"].exists()  # both fired
    assert len(trials) == 4 and trials.trial_id.is_unique
    t = trials.set_index("lr").sort_index()
    assert t.loc[BAD_LR].status == "failed" and "set-up of the trial" in t.loc[BAD_LR].error
    assert len(hooks.setups.read_text().splitlines()) == 1  # recorded once, not run again
    ok = t.drop(index=BAD_LR)
    assert (ok.status == "ok").all() and (ok.epochs_done == 2).all()
    assert ok.retries.tolist() == [1, 0, 0]  # only the member running at the first death ran again
    starts = _starts(hooks.starts)
    ids = [t.loc[lr].trial_id for lr in (0.0625, BAD_LR, 0.125, 0.25)]
    assert [starts.count(i) for i in ids] == [2, 1, 1, 1]  # finished before the second death: not retrained
    assert not hist.duplicated(["trial_id", "epoch"]).any()
    assert hist.groupby("trial_id").size().to_dict() == {i: 2 for i in ids if i != ids[1]}


@pytest.mark.slow
def test_a_worker_killed_before_its_first_epoch_or_while_idle_is_retried_not_failed(hooks, tmp_path):
    hooks.marks["start"].unlink()  # the first pack's worker dies before its first member starts
    hooks.marks["idle"].unlink()  # then a worker dies as its pack returned: the next pack finds it dead
    hooks.starts.unlink(missing_ok=True)
    sweep = _sweep(tmp_path, [0.0625, 0.125])  # two packs, one at a time
    trials, _, progress = _run(sweep, tmp_path / "r", pack_seconds=0, max_concurrent=1, max_failures=1)
    assert hooks.marks["start"].exists() and hooks.marks["idle"].exists()
    assert sorted(trials.status) == ["ok"] * 2, trials[["lr", "status", "error"]]
    assert (trials.epochs_done == 2).all() and (trials.retries == 0).all()  # no member was running
    assert sorted(_starts(hooks.starts)) == sorted(trials.trial_id)  # each trained once
    # Tune counted the second pack's one death twice and ended it in error: the runner queued it again
    assert len(list((tmp_path / "r" / "packs" / "tune").glob("packs-*/*-retry1/params.json"))) == 1


def test_member_results_flatten_a_packs_events_and_keep_the_old_format():
    old = [{"epoch": 1, "last": False, "config": {"trial": {"trial_id": "t"}}}, {"epoch": 2, "last": True}]
    assert {k: [r["epoch"] for r in v] for k, v in packs.member_results(old, "t").items()} == {"t": [1, 2]}
    new = [
        {"events": [{"member_id": "a", "member_start": True}, {"member_id": "a", "epoch": 1, "last": True}]},
        {"events": [{"member_id": "b", "member_start": True}, {"member_id": "b", "failed": True, "last": True}]},
    ]
    got = packs.member_results(new, "pack-x")
    assert sorted(got) == ["a", "b"] and got["a"][-1] == {"member_id": "a", "epoch": 1, "last": True}
    assert got["b"][-1]["failed"] and got["b"][0]["member_start"]


@pytest.mark.slow
def test_a_session_runs_its_rounds_and_stages_in_one_tune_run_on_the_same_workers(hooks, tmp_path):
    """Issue 27: three rounds over two stages of one session are one Tuner.fit (one experiment folder)
    whose workers outlive the rounds (Ray's 2 CPUs: at most 2 worker processes ran every member)."""
    from orchestrator.engine.session import open_session
    from orchestrator.stores.results_store import ResultsStore

    hooks.starts.unlink(missing_ok=True)
    sweep = _sweep(tmp_path, [0.0625, 0.125, 0.25])
    results = tmp_path / "results"
    kw = {"recorded_as": sweep, "track": False, "tracked_name": sweep.name, "experiment": None}
    with open_session(sweep, results, None, "sweep") as session:
        with session.stage(ResultsStore(results / "packs"), "x: 1\n", stream=io.StringIO(), **kw) as main:
            first = main.run(sweep.trials[:2])
            second = main.run(sweep.trials)  # the third only: the others are recorded
        with session.stage(ResultsStore(results / "packs" / "base"), "x: 1\n", stream=io.StringIO(), **kw) as base:
            third = base.run(sweep.trials[:1])
        runner = session.runner
    assert (first["ok"], second["ok"], third["ok"]) == (2, 1, 1)
    assert runner is not None and runner.fits == 1 and session.runner is None  # closed with the session
    assert [p.name for p in (results / "packs" / "tune").iterdir() if p.is_dir()] == [runner.experiment]
    assert not (results / "packs" / "base" / "tune").exists()
    assert (
        len(ResultsStore(results / "packs").trials()) == 3
        and len(ResultsStore(results / "packs" / "base").trials()) == 1
    )
    pids = hooks.starts.read_text().split()[1::2]
    assert len(pids) == 4 and len(set(pids)) <= 2, pids  # a Tuner per round would have started new workers


@pytest.mark.slow
def test_a_long_round_of_several_packs_gets_a_new_tune_run(hooks, tmp_path, monkeypatch):
    """A round whose work per slot exceeds tune_runner.FRESH_RUN_S (here: any) and that has more than one
    pack ends the session's Tune run and starts another (every worker at once); a one-pack round does not."""
    from orchestrator.engine import tune_runner
    from orchestrator.engine.session import open_session
    from orchestrator.stores.results_store import ResultsStore

    monkeypatch.setattr(tune_runner, "FRESH_RUN_S", -1.0)
    sweep = _sweep(tmp_path, [0.0625, 0.125, 0.25, 0.5])
    results = tmp_path / "results"
    kw = {"recorded_as": sweep, "track": False, "tracked_name": sweep.name, "experiment": None}
    with open_session(sweep, results, None, "sweep") as session:
        with session.stage(ResultsStore(results / "packs"), "x: 1\n", stream=io.StringIO(), **kw) as main:
            first = main.run(sweep.trials[:1])  # one pack: the run starts
            second = main.run(sweep.trials[1:3])  # two packs: a new run
            third = main.run(sweep.trials[3:4])  # one pack: the same run
            runner = session.runner
    assert (first["ok"], second["ok"], third["ok"]) == (1, 2, 1)
    runs = [p for p in (results / "packs" / "tune").iterdir() if p.is_dir()]
    assert runner.fits == 2 and len(runs) == 2
    assert all(p.name.endswith(f"-{os.getpid()}") for p in runs), runs  # engine.overheads finds a command's runs
    trials = ResultsStore(results / "packs").trials()
    assert len(trials) == 4 and trials.trial_id.is_unique
