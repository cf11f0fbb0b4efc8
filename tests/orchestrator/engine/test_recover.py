"""A sweep whose trials.parquet was moved aside rebuilds it from Tune's result.json files (no Ray)."""

import io
import json
import math

from orchestrator.engine.recover import tune_records
from orchestrator.spec.config import load_sweep
from orchestrator.stores.results_store import ResultsStore
from orchestrator.studies.sweep import run_sweep

SPACE = """
name: rec
trainer: {algorithm: bp, depth: 3, base_width: 16, width: 16}
data: {dataset: teacher, subset: 64, test_subset: 32}
train: {epochs: 2, batch_size: 32}
grid: {lr: [0.01, 0.1, 1.0, 10.0]}
"""


def _result(tid, epoch, last, **kw):
    # as Tune's JSON logger writes it: Tune's own trial_id replaces ours; the config holds ours
    row = {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "test_loss": 2.0 / epoch,
        "test_acc": 0.5,
        "wall_s": 0.1 * epoch,
        "diverged": False,
        "trial_id": "7944c_00001",
        "node": "n1",
        "hostname": "h",
        "device_used": "cpu",
        "matmul_backend": "onednn+torch",
        "last": last,
        "config": {"trial": {"trial_id": tid}},
    }
    row.update(kw)
    return json.dumps(row)


def _write(sweep_dir, run, tid, lines):
    d = sweep_dir / "tune" / run / tid
    d.mkdir(parents=True)
    (d / "result.json").write_text("\n".join(lines) + "\n")


def test_finished_trials_are_rebuilt_unfinished_and_failed_ones_are_not(tmp_path):
    space = tmp_path / "rec.yaml"
    space.write_text(SPACE)
    sweep = load_sweep(space)
    a, b, c, d = (t.trial_id for t in sweep.trials)
    sd = tmp_path / "results" / "rec"
    _write(sd, "rec-20260101-000000-1", a, [_result(a, 1, False), _result(a, 2, True)])
    _write(sd, "rec-20260101-000000-1", b, [_result(b, 1, False)])  # the driver died mid-trial
    _write(
        sd,
        "rec-20260101-000000-1",
        c,
        [json.dumps({"failed": True, "last": True, "error": "x", "config": {"trial": {"trial_id": c}}})],
    )
    # retried after its worker died: the second attempt is the record; a torn line at the end
    _write(
        sd,
        "rec-20260101-000000-1",
        d,
        [
            _result(d, 1, False),
            _result(d, 1, False),
            _result(d, 2, True, diverged=True, train_loss=math.inf),
            '{"epoch": 3',
        ],
    )
    rows, hist = tune_records(sd, "rec", {t.trial_id: t.to_dict() for t in sweep.trials})
    by_id = {r["trial_id"]: r for r in rows}
    assert sorted(by_id) == sorted([a, d])
    assert by_id[a]["status"] == "ok" and by_id[a]["epochs_done"] == 2 and by_id[a]["final_test_loss"] == 1.0
    assert by_id[d]["status"] == "diverged" and [h["epoch"] for h in hist[d]] == [1, 2]
    assert by_id[a]["device_used"] == "cpu" and by_id[a]["node"] == "n1"
    assert by_id[a]["matmul_backend"] == "onednn+torch"


def test_rerun_with_every_trial_in_tune_storage_rebuilds_the_table_without_running(tmp_path):
    space = tmp_path / "rec.yaml"
    space.write_text(SPACE)
    sweep = load_sweep(space)
    sd = tmp_path / "results" / "rec"
    for t in sweep.trials:
        _write(sd, "rec-20260101-000000-1", t.trial_id, [_result(t.trial_id, 1, False), _result(t.trial_id, 2, True)])
    out = io.StringIO()
    res = run_sweep(sweep, tmp_path / "results", track=False, stream=out)  # nothing to run: Ray never starts
    assert res.skipped == 4 and "rebuilt 4 finished trial(s)" in out.getvalue()
    store = ResultsStore(sd)
    assert sorted(store.trials().trial_id) == sorted(t.trial_id for t in sweep.trials)
    assert len(store.history()) == 8
    # recorded as part files, folded into the two tables when the sweep ended
    assert store.trials_path.is_file() and not (sd / "trials").exists() and not (sd / "history").exists()


def test_with_compact_off_the_rebuilt_trials_stay_part_files_and_a_rerun_skips_them(tmp_path):
    space = tmp_path / "rec.yaml"
    space.write_text(SPACE)
    sweep = load_sweep(space)
    sd = tmp_path / "results" / "rec"
    for t in sweep.trials:
        _write(sd, "rec-20260101-000000-1", t.trial_id, [_result(t.trial_id, 1, False), _result(t.trial_id, 2, True)])
    run_sweep(sweep, tmp_path / "results", track=False, stream=io.StringIO(), compact=False)
    store = ResultsStore(sd)
    assert not store.trials_path.exists() and len(list((sd / "trials").glob("part-*.parquet"))) == 1
    out = io.StringIO()
    again = run_sweep(sweep, tmp_path / "results", track=False, stream=out)  # parts count as done: nothing rebuilt
    assert again.skipped == 4 and "rebuilt" not in out.getvalue()
    assert len(store.trials()) == 4 and store.trials_path.is_file() and not (sd / "trials").exists()


def test_a_packs_members_are_rebuilt_each_from_its_own_results(tmp_path):
    space = tmp_path / "rec.yaml"
    space.write_text(SPACE)
    sweep = load_sweep(space)
    a, b, c, _ = (t.trial_id for t in sweep.trials)
    pack = {"pack": {"id": "p1", "members": [{"trial_id": a}, {"trial_id": b}, {"trial_id": c}]}}

    def member(tid, epoch, last, **kw):
        return {**json.loads(_result(tid, epoch, last, **kw)), "member_id": tid}

    def report(*events):  # a pack's report to Tune: its members' events since the last one
        return json.dumps({"events": list(events), "config": pack})

    # a finished; the worker died while b ran (b's first attempt is torn off), the retried pack skipped a,
    # finished b and died in c's first epoch
    lines = [report({"member_id": a, "member_start": True}, member(a, 1, False), member(a, 2, True))]
    lines += [report(member(b, 1, False)), report({"member_id": b, "member_start": True}, member(b, 1, False))]
    lines += [report(member(b, 2, True), member(c, 1, False))]
    _write(tmp_path / "results" / "rec", "rec-20260101-000000-1", "p1", lines)
    rows, hist = tune_records(tmp_path / "results" / "rec", "rec", {t.trial_id: t.to_dict() for t in sweep.trials})
    assert sorted(r["trial_id"] for r in rows) == sorted([a, b])
    assert [h["epoch"] for h in hist[a]] == [1, 2] and [h["epoch"] for h in hist[b]] == [1, 2]


def test_a_stage_below_the_session_finds_its_trials_in_the_sessions_tune_run_and_later_files_win(tmp_path):
    """Issue 27: one Tune run per command, in ``<name>/tune/``: tune-base's ``<name>/base`` rebuilds from
    there (and from ``base/tune``, where runs before wrote); a later result.json replaces an earlier one."""
    import os

    space = tmp_path / "rec.yaml"
    space.write_text(SPACE)
    sweep = load_sweep(space)
    a, b, _, _ = (t.trial_id for t in sweep.trials)
    session_dir = tmp_path / "results" / "rec"
    _write(session_dir, "rec-20260101-000000-1", a, [_result(a, 1, False), _result(a, 2, True, train_loss=0.9)])
    _write(session_dir / "base", "rec-base-20250101-000000-1", a, [_result(a, 1, False), _result(a, 2, True)])
    old = session_dir / "base" / "tune" / "rec-base-20250101-000000-1" / a / "result.json"
    os.utime(old, (1, 1))  # written long before the session's run
    _write(session_dir / "base", "rec-base-20250101-000000-1", b, [_result(b, 1, False), _result(b, 2, True)])
    specs = {t.trial_id: t.to_dict() for t in sweep.trials}
    rows, hist = tune_records(session_dir / "base", "rec-base", specs)
    assert sorted(r["trial_id"] for r in rows) == sorted([a, b])
    assert [h["train_loss"] for h in hist[a]] == [1.0, 0.9]  # the session's later file
