"""orchestrator/engine/overheads.py: a stage's real overheads derived from its results directory, the cache."""

import json
import socket
from dataclasses import asdict

import pytest

from orchestrator.engine.overheads import (
    Measured,
    RunTimes,
    derive,
    idle_gaps,
    load_cache,
    measured,
    remember,
    slot_chains,
)
from orchestrator.spec.config import load_sweep, to_yaml
from orchestrator.stores.results_store import ResultsStore, trial_row

T0 = 1_000_000.0  # the stage's start (status.json "started")
# (started_at, finished_at, wall_s, status) after T0: two slots; an idle gap 40-47 (a Tune run's boundary)
PLANTED = [
    (10.0, 20.0, 8.0, "ok"),  # slot A: 2 s not training
    (11.0, 21.0, 9.0, "ok"),  # slot B: 1 s
    (22.0, 32.0, 7.0, "ok"),  # slot A after a 2 s gap: 3 s
    (24.0, 35.0, 10.0, "diverged"),  # slot B after 3 s: 1 s
    (33.0, 40.0, 6.0, "ok"),  # slot A after 1 s: 1 s; then nothing runs 40 -> 47
    (47.0, 55.0, 8.0, "ok"),  # slot B (gap 35 -> 47 = 12 s, of which 7 the idle gap): 0 s
    (48.0, 58.0, 9.0, "ok"),  # slot A (gap 40 -> 48 = 8 s, of which 7): 1 s
]
STAGE_END = 61.5  # status.json "updated" at close: tail 3.5 s after the last trial recorded (58)


def _plant(tiny_space, results, host=None, extra=()):
    """A tiny sweep's store with the planted trials, one failed and one from an earlier command, and a
    closed status.json."""
    sweep = load_sweep(tiny_space)
    store = ResultsStore(results / sweep.name)
    store.write_config(to_yaml(sweep))
    rows, hist = [], {}
    host = host or socket.gethostname()
    plan = [*PLANTED, (50.0, 52.0, 1.0, "failed"), (-500.0, -490.0, 9.0, "ok"), *extra]
    for t, (s, f, w, status) in zip(sweep.trials, plan, strict=False):
        h = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "wall_s": w, "diverged": False}]
        row = trial_row(sweep.name, t.to_dict(), h, status, hostname=host)
        row.update(started_at=T0 + s, finished_at=T0 + f)
        rows.append(row)
        hist[t.trial_id] = h
    store.record(rows, hist)
    status = {"state": "closed", "started": T0, "updated": T0 + STAGE_END, "host": host, "pid": 1}
    (store.dir / "status.json").write_text(json.dumps(status))
    return store.dir


def test_slot_chains_and_idle_gaps():
    spans = [(s, f) for s, f, _, _ in PLANTED]
    chains = slot_chains(spans)
    # each trial goes to the free slot freed last: the third (22 s) follows the second (ended 21), not the first (20)
    assert sorted(chains) == [[0, 3, 6], [1, 2, 4, 5]]
    assert idle_gaps(spans) == [(21.0, 22.0), (40.0, 47.0)]  # only the second is long enough for a Tune run's end


def test_derive_returns_the_planted_overheads(tiny_space, tmp_path):
    run = derive(_plant(tiny_space, tmp_path / "results"))
    assert run is not None and run.host == socket.gethostname() and run.stage_started == T0
    assert run.trials == 7 and run.slots == 2  # the failed trial and the earlier command's are not this stage's
    assert run.lead_s == pytest.approx(10.0)
    assert run.tail_s == pytest.approx(3.5)
    assert run.round_gaps == [pytest.approx(7.0)]
    within = 2 + 1 + 3 + 1 + 1 + 0 + 1
    # the seconds between trials on a slot, less the idle gap: the same sum whichever slot a trial is given
    between = 2 + 1 + (8 - 7) + 3 + (12 - 7)  # as planted: 22-20, 33-32, 48-40 less 7; 24-21, 47-35 less 7
    assert run.per_trial_s == pytest.approx((within + between) / 7)
    assert run.train_s == pytest.approx(57.0)
    assert sum(run.kinds.values()) > 0 and len(run.kinds) == 2  # one kind per width
    assert run.packs is None and run.per_pack_s is None  # no Tune directory: packs unknown


def test_derive_counts_the_packs_of_the_command_from_its_tune_directory(tiny_space, tmp_path):
    d = _plant(tiny_space, tmp_path / "results")  # status.json: pid 1
    ids = [t.trial_id for t in load_sweep(tiny_space).trials]

    def pack(run: str, name: str, members: list[str]) -> None:
        p = d / "tune" / run / name
        p.mkdir(parents=True)
        (p / "params.json").write_text(json.dumps({"pack": {"members": [{"trial_id": i} for i in members]}}))

    pack("tiny-20260101-000000-1", "pack-a", ids[:4])
    pack("tiny-20260101-000000-1", "pack-b", ids[4:7])
    pack("tiny-20260101-000000-1", "pack-c", ids[8:])  # the earlier command's trial: not this stage's
    pack("tiny-20250101-000000-71", "pack-d", ids[:2])  # another command's Tune run
    run = derive(d)
    assert run.packs == 2 and run.per_pack_s == pytest.approx(run.per_trial_s * 7 / 2)


def test_derive_needs_a_closed_stage(tiny_space, tmp_path):
    d = _plant(tiny_space, tmp_path / "results")
    status = json.loads((d / "status.json").read_text())
    (d / "status.json").write_text(json.dumps({**status, "state": "running"}))
    assert derive(d) is None
    (d / "status.json").unlink()
    assert derive(d) is None


def test_remember_keeps_one_entry_per_stage_with_the_command_times(tiny_space, tmp_path):
    d = _plant(tiny_space, tmp_path / "results")
    cache = tmp_path / "cache" / "overheads.json"
    run = remember(d, command_started=T0 - 30.0, command_ended=T0 + STAGE_END + 6.0, planned_train_s=114.0, path=cache)
    assert run.pre_s == pytest.approx(30.0) and run.post_s == pytest.approx(6.0)
    assert run.calibration_ratio == pytest.approx(0.5)  # 57 s trained for 114 s calibrated
    remember(d, command_started=T0 - 30.0, path=cache)  # the same stage again: replaced, not added
    (stored,) = load_cache(cache)
    assert stored.pre_s == pytest.approx(30.0) and stored.post_s is None and stored.lead_s == pytest.approx(10.0)


def test_measured_combines_the_cache_and_the_results_directory(tiny_space, tmp_path):
    results = tmp_path / "results"
    d = _plant(tiny_space, results)
    cache = tmp_path / "overheads.json"
    assert measured(results, path=cache).runs == 1  # the closed stage in the results directory, no cache
    remember(d, command_started=T0 - 20.0, path=cache)
    m = measured(results, path=cache)
    assert m.runs == 1 and m.pre_s == pytest.approx(20.0)  # the cache's entry, not counted twice
    assert m.lead_s == pytest.approx(10.0) and m.round_gap_s == pytest.approx(7.0)
    other = tmp_path / "other"
    _plant(tiny_space, other, host="another-host")
    assert measured(other, path=tmp_path / "none.json") == Measured()  # another host's runs are not this one's
    assert Measured.of([derive(d), derive(d)]).runs == 2


def test_process_started_is_when_the_process_started():
    import subprocess
    import sys
    import time

    before = time.time()
    code = "from orchestrator.engine.overheads import process_started; print(process_started())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    after = time.time()
    assert before - 1.0 <= float(out) <= after  # /proc counts clock ticks (1/100 s) from a whole-second boot time


def test_measured_scales_each_run_to_the_load_now(tiny_space, tmp_path):
    """Seconds measured at 2 runnable processes per CPU count double at 4; a run at no contention counts as 1."""
    run = derive(_plant(tiny_space, tmp_path / "results"))
    busy, idle = RunTimes.from_dict({**asdict(run), "load": 2.0}), RunTimes.from_dict({**asdict(run), "load": 0.3})
    assert Measured.of([busy], load=4.0).lead_s == pytest.approx(20.0)
    assert Measured.of([idle], load=4.0).lead_s == pytest.approx(40.0)
    assert Measured.of([busy, busy], load=None).lead_s == pytest.approx(10.0)  # no load now: as measured
    assert Measured.of([run], load=4.0).lead_s == pytest.approx(10.0)  # a run that does not know its load
    rated = RunTimes.from_dict({**asdict(busy), "calibration_ratio": 0.4})
    assert Measured.of([rated], load=4.0).calibration_ratio == pytest.approx(0.4)  # a ratio: never scaled
