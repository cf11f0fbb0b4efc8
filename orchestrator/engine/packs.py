"""Trials in packs: which trial specs one Ray Tune trial runs one after another (no Ray here).

A Tune trial costs fixed seconds of its own (scheduling, a result round trip, the worker's set-up),
which the many short trials of a sweep (0.05-2 s of training each) paid once each. A **pack** is a
list of trial specs that share everything that is costly to set up (:func:`pack_key`: the trainer
config without lr, seed and parametrization, the data and the loop settings), run in one process
with the data loaded once. Packs hold about :data:`PACK_SECONDS` of estimated training each (a trial
estimated at that or more is a pack of its own), and there are never fewer packs than
``2 x slots`` when there are that many trials, so every worker stays busy to the end.

The estimate of a trial's seconds (:func:`estimate_seconds`): the median ``wall_s`` of trials of
its kind recorded ``ok`` in the results store, else a calibration here (a few steps and one
evaluation, scaled to its epochs). It is ``orchestrator.engine.plan.CostModel``'s rule, written again
here because ``plan`` sits below ``tune_runner`` in the import order; it ignores the host name
(a cluster's trials run on many).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

PACK_SECONDS = 3.0  # estimated training seconds a pack aims at
FREE_KEYS = (
    "lr",
    "seed",
    "parametrization",
)  # as orchestrator.engine.plan.FREE_KEYS: cost the same whatever their value
CALIBRATION_STEPS = 7  # timed one by one; the median counts (a load spike in one step does not)
FALLBACK_SECONDS = PACK_SECONDS  # a trial that cannot be estimated is a pack of its own
PACKS_PER_SLOT = 2  # at least this many packs per slot (4 and 8 did not help: benchmarks/pack_bench.py)


def pack_key(spec: Mapping[str, Any]) -> str:
    """What trials of one pack share: the spec without trial id, lr, seed, parametrization (a JSON string)."""
    trainer = {k: v for k, v in spec["trainer"].items() if k not in FREE_KEYS}
    return json.dumps([trainer, spec["data"], spec["train"]], sort_keys=True, default=str)


def pack_id(members: Sequence[Mapping[str, Any]]) -> str:
    """A stable name of a pack: the member's own trial id for one member, else a hash of the members' ids."""
    ids = [m["trial_id"] for m in members]
    if len(ids) == 1:
        return ids[0]
    return "pack-" + hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]


def recorded_seconds(specs: Sequence[Mapping[str, Any]], trials) -> dict[str, float]:
    """``{pack_key: median wall_s}`` of the trials recorded ``ok`` in ``trials`` (a trials table) per kind of spec.

    A column of the table named like a trainer key (not lr, seed, parametrization) must match; the
    other keys are fixed within one results directory.
    """
    out: dict[str, float] = {}
    if trials is None or trials.empty or "wall_s" not in trials.columns or "status" not in trials.columns:
        return out
    ok = trials[trials.status == "ok"]
    for spec in specs:
        key = pack_key(spec)
        if key in out:
            continue
        rows = ok
        for k, v in spec["trainer"].items():
            if k not in FREE_KEYS and k in rows.columns:
                rows = rows[rows[k].astype(str) == str(v)]
        walls = [float(w) for w in rows.wall_s if math.isfinite(float(w))]
        if walls:
            out[key] = statistics.median(walls)
    return out


def calibrate(spec: Mapping[str, Any], threads: int = 1, device: str = "cpu", cache: dict | None = None) -> float:
    """Seconds of ``spec``'s training, timed here on ``device``: a few steps and one evaluation, scaled to
    its epochs (the loop's full batches). ``cache``: datasets already loaded, by data, device and dtype."""
    import torch

    from trainers import TrainerConfig, load_dataset, make_trainer

    tc = TrainerConfig(**spec["trainer"]).replace(device=device)
    d = spec["data"]
    subset, test_subset = d.get("subset") or None, d.get("test_subset") or None  # 0: all, as the sweep reads it
    key = f"{d['dataset']}:{subset}:{test_subset}:{tc.device}:{tc.dtype}"
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))  # as a trial does: one thread per CPU it was given
    try:
        cache = {} if cache is None else cache
        if key not in cache:
            cache[key] = load_dataset(d["dataset"], subset, test_subset, tc.torch_device, tc.torch_dtype, tc.seed)
        data = cache[key]
        torch.manual_seed(tc.seed)
        trainer = make_trainer(tc, data.input_dim, data.output_dim)
        n = data.x_train.shape[0]
        bs = max(1, min(int(spec["train"]["batch_size"]), n))
        xb, yb = data.x_train[:bs], data.y_train[:bs]
        trainer.step(xb, yb)  # warm-up
        times = []
        for _ in range(CALIBRATION_STEPS):
            t0 = time.perf_counter()
            trainer.step(xb, yb)
            times.append(time.perf_counter() - t0)
        per_step = sorted(times)[len(times) // 2]
        t0 = time.perf_counter()
        trainer.evaluate(data.x_test, data.y_test)
        per_eval = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    return int(spec["train"]["epochs"]) * ((n // bs) * per_step + per_eval)


def estimate_seconds(
    specs: Sequence[Mapping[str, Any]], trials=None, calibrated: bool = True, threads: int = 1
) -> dict[str, float]:
    """``{trial_id: estimated training seconds}``: recorded medians of its kind, else calibrated, else
    :data:`FALLBACK_SECONDS` (also when the calibration fails: the trial itself will say why)."""
    per_kind = recorded_seconds(specs, trials)
    out: dict[str, float] = {}
    for spec in specs:
        key = pack_key(spec)
        if key not in per_kind:
            per_kind[key] = FALLBACK_SECONDS
            if calibrated:
                try:
                    per_kind[key] = calibrate(spec, threads)
                except Exception:  # a bad config fails in its trial, with its own message
                    pass
        out[spec["trial_id"]] = per_kind[key]
    return out


def form_packs(
    specs: Sequence[Mapping[str, Any]],
    seconds: Mapping[str, float],
    target: float = PACK_SECONDS,
    slots: int = 1,
) -> list[list[Mapping[str, Any]]]:
    """Split ``specs`` into packs: members share :func:`pack_key`; each pack holds about ``target``
    estimated seconds (``seconds`` by trial id; a trial at ``target`` or more alone; ``target`` <= 0:
    one trial per pack); at least ``min(len(specs), 2 * slots)`` packs (the largest split in halves; slots 0:
    no floor). Every spec is in exactly one pack, specs keep their order inside a pack, and packs come
    longest first.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for spec in specs:
        groups.setdefault(pack_key(spec), []).append(spec)

    def cost(pack: Sequence[Mapping[str, Any]]) -> float:
        return sum(float(seconds.get(m["trial_id"], FALLBACK_SECONDS)) for m in pack)

    packs: list[list[Mapping[str, Any]]] = []
    for members in groups.values():
        current: list[Mapping[str, Any]] = []
        for spec in members:
            est = float(seconds.get(spec["trial_id"], FALLBACK_SECONDS))
            if target <= 0 or est >= target:
                packs.append([spec])
                continue
            current.append(spec)
            if cost(current) >= target:
                packs.append(current)
                current = []
        if current:
            packs.append(current)
    want = min(len(specs), PACKS_PER_SLOT * max(0, int(slots)))
    while len(packs) < want:
        splittable = [p for p in packs if len(p) > 1]
        if not splittable:
            break
        big = max(splittable, key=cost)
        i = packs.index(big)
        half = len(big) // 2
        packs[i : i + 1] = [big[:half], big[half:]]
    return sorted(packs, key=cost, reverse=True)  # stable: equal packs keep their grid order


def member_results(results: Sequence[Mapping[str, Any]], dirname: str) -> dict[str, list[dict[str, Any]]]:
    """``{trial_id: its results in order}`` from one Tune trial's results (its ``result.json`` lines).

    A pack reports ``{"events": [...]}``, each event naming its member in ``member_id`` (a start event
    ``member_start``, then one per epoch with the history row, ``last`` on the last, ``failed`` and
    ``error`` when its set-up or training failed), flattened here per member (start events included;
    a retried member's last attempt begins at its last start event). A result without events (the
    one-trial-per-Tune-trial format before packs) belongs to ``config.trial.trial_id``, else ``dirname``.
    For ``orchestrator.engine.recover``, which rebuilds trials from Tune's storage.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "events" in r:
            for event in r.get("events") or ():
                if event.get("member_id"):
                    out.setdefault(str(event["member_id"]), []).append(dict(event))
        else:
            tid = ((r.get("config") or {}).get("trial") or {}).get("trial_id", dirname)
            out.setdefault(str(tid), []).append(dict(r))
    return out
