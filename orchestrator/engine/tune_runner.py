"""Ray Tune: the pure trainables, the recording callbacks, and the Tuner. The only module importing ray.tune.

A grid sweep's Tune trial is a **pack** of trial specs (:mod:`orchestrator.engine.packs`: specs that share
their costly set-up, about ``PACK_SECONDS`` of training together): :func:`pack_trainable` builds each
member's trainer in turn (the data made once) and runs its epochs; it writes nothing. Each member's
start and each epoch's history row are events sent in batches (one ``tune.report`` at most every
``FLUSH_S`` seconds and at the end, with a checkpoint naming the members finished so far), so a pack
that Tune retries after its worker died skips the members it reported finished.
The driver's :class:`PackCallback` hands every member's events to a plain-Python recorder
(``orchestrator.engine.recorder.Recorder``), which alone writes Parquet and MLflow; each member stays one
recorded trial.

A command runs **one** Tune run (:class:`Runner`, issue 27): ``Tuner.fit`` in a background thread, fed
packs through a queue (:class:`_QueueSearcher`), so its workers and Tune's set-up last across every
round and stage of the command; each stage's round is a :class:`Batch` routed to its own recorder.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import Searcher

from orchestrator.engine.data_shipping import ship

# Test hook: a trial dies (os._exit) once after its first epoch if this names a marker file
# that does not exist yet; the marker is created atomically, so exactly one trial dies once.
CRASH_ONCE_ENV = "MUTRANSFER_TEST_CRASH_ONCE"
# Test hook: "LR:FILE": a trial whose lr is LR (any, for "*") raises in its set-up (and appends a line to FILE each time).
SETUP_ERROR_ENV = "MUTRANSFER_TEST_SETUP_ERROR"
# Test hook: "WHEN:MARKER[,WHEN:MARKER...]": a pack's worker dies (os._exit) once per marker that does not exist yet:
# ``start`` as the pack starts (before any member's set-up), ``member`` after a member finished (its last
# result and the checkpoint naming it reported), ``idle`` after the pack returned, when Tune reuses the
# worker for its next trial (that trial finds it dead before it started: issue 28).
KILL_ENV = "MUTRANSFER_TEST_KILL"
# Test hook: FILE: every member appends "<trial_id> <pid>" to FILE as it starts.
START_LOG_ENV = "MUTRANSFER_TEST_START_LOG"
MEMBER = "member_id"  # the event key naming the member (Tune's own ``trial_id`` is the pack's)
FLUSH_S = 1.0  # a pack reports its members' events at most this often (and when it ends)
IDLE_WAIT_S = 60.0  # a runner with nothing queued nor running waits this long per Tune poll for a submission


def _claim(marker: str) -> bool:
    """Create ``marker`` atomically; True if this call created it (the hook fires once per marker)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def _maybe_crash(before: Callable[[], None] | None = None) -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if marker and _claim(marker):
        if before:
            before()  # a pack sends what it holds: the epoch was reported, then the worker died
        os._exit(17)


def _maybe_kill(when: str, before: Callable[[], None] | None = None) -> None:
    for item in filter(None, os.environ.get(KILL_ENV, "").split(",")):
        point, _, marker = item.partition(":")
        if point == when and marker and _claim(marker):
            if before:
                before()
            if when == "idle":
                _die_on_reuse()
            else:
                os._exit(19)


def _die_on_reuse() -> None:
    """Let the pack's return reach the driver; die when Tune hands this worker (kept for reuse) its next
    trial or stops it: the next trial finds its worker dead before it started (issue 28)."""
    try:
        from ray.train._internal.session import get_session  # private: a test hook only

        get_session().finish = lambda *a, **k: os._exit(19)  # reset_config and cleanup call it first
    except Exception:
        import threading

        threading.Thread(target=lambda: (time.sleep(0.02), os._exit(19)), daemon=True).start()


def _log_start(trial_id: str) -> None:
    log = os.environ.get(START_LOG_ENV)
    if log:
        with open(log, "a") as fh:
            fh.write(f"{trial_id} {os.getpid()}\n")


class SetupError(Exception):
    """A trial's set-up failed (bad config reaching a worker, a trainer that cannot be built): it would
    fail the same way on every attempt, so it is reported once as ``failed`` and not retried."""


def _device(tc) -> str:
    """The torch device of a trial: ``auto`` is CUDA when Ray assigned the trial a GPU, else CPU."""
    if tc.device != "auto":
        return tc.device
    return "cuda" if ray.get_gpu_ids() else "cpu"


def _setup(spec: dict[str, Any], threads: int, data_ref: Any, cache: dict | None = None):
    """The trial's config (device resolved), data and trainer; any exception is a :class:`SetupError`.

    ``cache`` (a pack's): datasets already made in this process, by device, dtype and (for a
    generated dataset) seed, so a pack loads its data once."""
    import torch

    from orchestrator.engine.data_shipping import dataset_for_trial
    from trainers import TrainerConfig, make_trainer

    try:
        tc = TrainerConfig(**spec["trainer"])
        _maybe_fail_setup(tc.lr)
        tc = tc.replace(device=_device(tc))
        torch.set_num_threads(max(1, int(threads)))
        key = (str(tc.torch_device), str(tc.torch_dtype), tc.seed if data_ref is None else None)
        if cache is not None and key in cache:
            data = cache[key]
        else:
            data = dataset_for_trial(spec["data"], data_ref, tc.torch_device, tc.torch_dtype, tc.seed)
            if cache is not None:
                cache[key] = data
        torch.manual_seed(tc.seed)
        trainer = make_trainer(tc, data.input_dim, data.output_dim)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda: may pass on another attempt
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SetupError(f"{type(exc).__name__}: {first}"[:500]) from exc
    return tc, data, trainer


def _maybe_fail_setup(lr: float) -> None:
    hook = os.environ.get(SETUP_ERROR_ENV)
    if not hook:
        return
    value, _, log = hook.partition(":")
    if value == "*" or float(value) == float(lr):
        if log:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        raise RuntimeError(f"test hook: set-up of the trial with lr={lr} fails")


# ---- packs: one Tune trial runs several trial specs (orchestrator.engine.packs) --------------------
def _checkpoint_done(checkpoint) -> set[str]:
    """The members a pack's checkpoint names as finished (none without one)."""
    if checkpoint is None:
        return set()
    with checkpoint.as_directory() as d:
        return set(json.loads((Path(d) / "done.json").read_text()))


class _Outbox:
    """A pack's member events, sent to the driver as one ``tune.report({"events": [...]})`` at most every
    :data:`FLUSH_S` seconds and when the pack ends: a report costs a round trip through Tune's driver
    loop (its callbacks and loggers), which is what the many short trials paid. When members finished
    since the last report, it carries a checkpoint naming every finished member."""

    def __init__(self, done: set[str]) -> None:
        self.done, self.sent = done, set(done)
        self.events: list[dict] = []
        self.last = time.monotonic()

    def add(self, event: dict) -> None:
        self.events.append(event)
        if time.monotonic() - self.last >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if not self.events:
            return
        result = {"events": self.events, "reported_at": time.time()}
        if self.done == self.sent:
            tune.report(result)
        else:
            with tempfile.TemporaryDirectory(prefix="pack-") as d:
                (Path(d) / "done.json").write_text(json.dumps(sorted(self.done)))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
            self.sent = set(self.done)
        self.events = []
        self.last = time.monotonic()


def _run_member(spec: dict[str, Any], threads: int, data_ref: Any, out: _Outbox, cache: dict) -> None:
    """Train one member of a pack; its events (:data:`MEMBER` names it) go to ``out``.

    A start event first (``member_start``), then each epoch's history row as a lone trial reports it
    (``last`` on the last one). A set-up error, an exception in training (not in reporting) or
    divergence end the member, recorded as such, and the pack goes on; a lost worker ends the pack
    (Tune retries it).
    """
    from trainers import train

    tid = spec["trial_id"]
    _log_start(tid)
    started_at = time.time()  # epoch seconds (Tune's own timestamps are whole seconds): for benchmarks
    where = {
        MEMBER: tid,
        "node": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "started_at": started_at,
    }
    out.add({**where, "member_start": True, "reported_at": started_at})

    def fail(error: str) -> None:
        out.done.add(tid)
        out.add({**where, "failed": True, "error": error, "last": True, "reported_at": time.time()})

    try:
        tc, data, trainer = _setup(spec, threads, data_ref, cache)
    except SetupError as exc:
        fail(str(exc))
        return
    where["device_used"] = str(tc.torch_device)
    epochs = int(spec["train"]["epochs"])
    reporting = False

    def report(row: dict) -> None:
        nonlocal reporting
        last = bool(row.get("diverged")) or int(row["epoch"]) >= epochs
        if last:
            out.done.add(tid)
        reporting = True
        out.add({**row, **where, "last": last, "reported_at": time.time()})
        reporting = False
        _maybe_crash(out.flush)
        if last:
            _maybe_kill("member", out.flush)

    try:
        train(trainer, data, epochs, spec["train"]["batch_size"], seed=tc.seed, on_epoch=report)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if reporting or type(exc).__name__ == "OutOfMemoryError" or tid in out.done:
            raise  # Tune's session, or CUDA memory that another attempt may have: the pack fails
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(f"{type(exc).__name__}: {first}"[:500])


def _train_members(
    members: list[dict[str, Any]], threads: int, data_ref: Any, out: _Outbox, batched: str = "auto"
) -> None:
    """Train a pack's members, the data made once: as one stacked model when ``batched`` allows it
    (:func:`_train_stacked`), else one after another."""
    cache: dict = {}
    todo = [spec for spec in members if spec["trial_id"] not in out.done]
    if len(todo) > 1 and batched != "off" and _train_stacked(todo, threads, data_ref, out, cache, batched):
        return
    for spec in todo:
        _run_member(spec, threads, data_ref, out, cache)


def _train_stacked(todo: list[dict[str, Any]], threads: int, data_ref: Any, out: _Outbox, cache: dict, mode: str):
    """Train ``todo`` as one stacked model (``trainers.train_batched``); False when they cannot be
    (``auto`` off CUDA, ``trainers.batchable`` says no, generated data that differs by seed, a set-up
    error): the caller then trains them one by one. Each member's events are its own, as in
    :func:`_run_member`; ``wall_s`` is its share of the pack's time."""
    from trainers import TrainerConfig, batchable, train_batched

    try:
        configs = [TrainerConfig(**spec["trainer"]) for spec in todo]
        configs = [c.replace(device=_device(c)) for c in configs]
    except Exception:
        return False
    if mode == "auto" and configs[0].torch_device.type != "cuda":
        return False
    if not batchable(configs) or (data_ref is None and len({c.seed for c in configs}) > 1):
        return False
    try:
        _, data, _ = _setup(todo[0], threads, data_ref, cache)
    except SetupError:
        return False
    epochs = int(todo[0]["train"]["epochs"])
    node, host = ray.get_runtime_context().get_node_id(), socket.gethostname()
    wheres = []
    for spec, tc in zip(todo, configs):
        _log_start(spec["trial_id"])
        where = {MEMBER: spec["trial_id"], "node": node, "hostname": host, "started_at": time.time()}
        where["device_used"] = str(tc.torch_device)
        out.add({**where, "member_start": True, "reported_at": where["started_at"]})
        wheres.append(where)

    def report(i: int, row: dict) -> None:
        last = bool(row.get("diverged")) or int(row["epoch"]) >= epochs
        if last:
            out.done.add(todo[i]["trial_id"])
        out.add({**row, **wheres[i], "last": last, "reported_at": time.time()})

    try:
        train_batched(configs, data, epochs, int(todo[0]["train"]["batch_size"]), on_epoch=report)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        for spec, where in zip(todo, wheres):
            if spec["trial_id"] not in out.done:
                out.done.add(spec["trial_id"])
                error = f"{type(exc).__name__}: {first}"[:500]
                out.add({**where, "failed": True, "error": error, "last": True, "reported_at": time.time()})
    return True


def pack_trainable(config: dict[str, Any], data_ref: Any = None) -> None:
    """One Tune trial: ``config["pack"]`` = ``{"id", "members": [TrialSpec.to_dict(), ...]}``, run in turn.

    Members named finished by the checkpoint Tune restores after a lost worker are skipped.
    ``config["plugins"]`` (the sweep's ``plugins``) are imported first, then ``$MUTRANSFER_PLUGINS``.
    """
    from orchestrator.spec.plugins import import_all

    import_all(config.get("plugins", ()))
    out = _Outbox(_checkpoint_done(tune.get_checkpoint()))
    _maybe_kill("start")
    _train_members(
        list(config["pack"]["members"]), config.get("threads", 1), data_ref, out, config.get("batched", "auto")
    )
    out.flush()
    _maybe_kill("idle")


class Recorder(Protocol):
    """What the driver does with trial events (see ``orchestrator.studies.sweep.Recorder``)."""

    def started(self, trial_id: str) -> None: ...
    def result(self, trial_id: str, result: dict) -> None: ...
    def restarted(self, trial_id: str) -> None: ...
    def completed(self, trial_id: str) -> None: ...
    def errored(self, trial_id: str, error: str) -> None: ...


class _Pack:
    """What the driver knows of one pack (a Tune trial): its members, which finished, which run now."""

    def __init__(self, members: list[dict[str, Any]], deaths: int, recorder: Recorder | None = None) -> None:
        self.members = members
        self.finished: set[str] = set()
        self.running: set[str] = set()  # started in this attempt, not finished
        self.ran: set[str] = set()  # started in any attempt
        self.deaths = deaths  # lost workers counted against max_failures, over every round
        self.stale = False  # a death was handled and the pack has not started again since
        self.recorder = recorder  # where its members' events go (the submitting stage's recorder)
        self.config: dict[str, Any] = {}  # the pack's config (``trial.config["pack"]``)
        self.ended = False  # the Tune trial is over (complete, or its error handled)

    def unfinished(self) -> list[dict[str, Any]]:
        return [m for m in self.members if m["trial_id"] not in self.finished]


class PackCallback(tune.Callback):
    """Forwards a pack's events to a :class:`Recorder` as its members' own events.

    A pack reports its members' events in batches (``{"events": [...]}``, each naming its member in
    :data:`MEMBER`): they become ``started``/``result`` of that member, in order; when
    Tune retries the pack after its worker died, the members running then are ``restarted``; the
    pack's complete or final error finishes the members that had not finished.

    A lost worker counts once against ``max_failures``, whenever it died (issue 28): Tune 2.60 may
    report one death twice (the dead actor it reuses for a trial fails two task futures) and calls
    the second ``on_trial_error`` without a retry when the trial had been re-queued. A report that
    comes after a retry was scheduled and before the pack started again is that same death; a pack
    that Tune ends in error with fewer deaths than ``max_failures`` + 1 is put in :attr:`requeued`
    (or handed to ``on_requeue``), and :class:`Runner` runs its unfinished members again.

    In a :class:`Runner`, ``route(pack config)`` names the recorder of each pack (its stage's),
    ``on_end(pack config)`` hears that a Tune trial is over, and each trial's own ``max_failures`` is
    what its pack has left (``pack["deaths"]`` spent before).
    """

    def __init__(self, recorder: Recorder | None, max_failures: int) -> None:
        self.recorder, self.max_failures = recorder, max_failures
        self.packs: dict[str, _Pack] = {}  # Tune's trial id -> the pack
        self.deaths: dict[str, int] = {}  # pack id -> deaths before this round (without pack["deaths"])
        self.requeued: list[tuple[list[dict[str, Any]], int]] = []  # (unfinished members, deaths so far)
        self.route: Callable[[dict], Recorder] | None = None
        self.on_end: Callable[[dict], None] | None = None
        self.on_requeue: Callable[[dict, list[dict[str, Any]], int], None] | None = None

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment's state (for ``Tuner.restore``, unused here):
        leave out the recorders and hooks, which hold what cannot be pickled (locks, open stores)."""
        return {"max_failures": self.max_failures, "recorder": None, "packs": {}, "deaths": {}, "requeued": []}

    def _pack(self, trial) -> _Pack:
        if trial.trial_id not in self.packs:
            cfg = trial.config["pack"]
            deaths = int(cfg.get("deaths", self.deaths.get(cfg["id"], 0)))
            recorder = self.route(cfg) if self.route is not None else self.recorder
            pack = self.packs[trial.trial_id] = _Pack(list(cfg["members"]), deaths, recorder)
            pack.config = cfg
            if "deaths" in cfg:  # the retries Tune may still make of this trial
                trial.max_failures = max(0, self.max_failures - deaths)
        return self.packs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._pack(trial).stale = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        pack = self._pack(trial)
        pack.stale = False
        for event in result.get("events") or ():
            self._event(pack, event)

    def _event(self, pack: _Pack, event: dict) -> None:
        mid = event.get(MEMBER)
        if mid is None or mid in pack.finished:
            return
        if event.get("member_start"):
            pack.running.add(mid)
            pack.ran.add(mid)
            pack.recorder.started(mid)
            return
        pack.recorder.result(mid, event)
        if event.get("last"):
            pack.finished.add(mid)
            pack.running.discard(mid)

    def _lost_worker(self, pack: _Pack) -> None:
        for mid in sorted(pack.running):
            pack.recorder.restarted(mid)
        pack.running.clear()

    def on_trial_recover(self, iteration, trials, trial, **info):
        pack = self._pack(trial)
        if pack.stale:
            return  # the death already counted
        pack.deaths += 1
        pack.stale = True
        self._lost_worker(pack)

    def on_trial_complete(self, iteration, trials, trial, **info):
        pack = self._pack(trial)
        try:
            for m in pack.unfinished():
                mid = m["trial_id"]
                pack.finished.add(mid)
                if mid in pack.ran:
                    pack.recorder.completed(mid)
                else:
                    pack.recorder.errored(mid, "its pack ended before it ran")
        finally:
            self._end(pack)

    def on_trial_error(self, iteration, trials, trial, **info):
        pack = self._pack(trial)
        try:
            deaths = pack.deaths + (0 if pack.stale else 1)
            if deaths <= self.max_failures and pack.unfinished():
                self._lost_worker(pack)
                unfinished = pack.unfinished()
                pack.finished |= {m["trial_id"] for m in unfinished}  # this Tune trial is over
                if self.on_requeue is not None:
                    self.on_requeue(pack.config, unfinished, deaths)
                else:
                    self.requeued.append((unfinished, deaths))
                return
            error = _error_text(trial)
            for m in pack.unfinished():
                pack.finished.add(m["trial_id"])
                pack.recorder.errored(m["trial_id"], error)
        finally:
            self._end(pack)

    def _end(self, pack: _Pack) -> None:
        if self.on_end is not None and not pack.ended:  # once per Tune trial, whatever Tune reports twice
            pack.ended = True
            self.on_end(pack.config)


def _error_text(trial) -> str:
    """The first line of the trial's last error (Tune writes it to the trial's local error file)."""
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text().rsplit("Failure #", 1)[-1]
            text = "\n".join(text.splitlines()[1:])  # drop the "N (occurred at ...)" header
        text = text or str(trial.get_error() or "")
    except Exception:  # the message is a courtesy; never let it break the recording
        pass
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else "trial failed")[:500]


def connect(address: str | None = None) -> bool:
    """Join the cluster at ``address``, or start Ray embedded here. True if this call started Ray."""
    if ray.is_initialized():
        return False
    ray.init(
        address=address or None,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        configure_logging=True,
    )
    return True


def cluster_offer():
    """What the connected cluster offers a trial (:class:`orchestrator.engine.preflight.ClusterOffer`): the alive
    nodes' resources and, from the autoscaler's cluster config, the node types it may still add."""
    from orchestrator.engine.preflight import ClusterOffer

    nodes = [{k: float(v) for k, v in n.get("Resources", {}).items()} for n in ray.nodes() if n.get("Alive")]
    offer = ClusterOffer(nodes=nodes)
    try:
        from ray._private.state import state
        from ray.experimental.internal_kv import _internal_kv_get

        config = state.get_cluster_config()  # autoscaler v2 reports its node types here
        if config is not None and config.node_group_configs:
            offer.node_types = [
                {k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs if g.max_count != 0
            ]
        offer.autoscaling = _v1_autoscaler_may_add_nodes(_internal_kv_get("__autoscaling_status"))
    except Exception:  # private APIs: without them, only the nodes there are count
        pass
    return offer


def _v1_autoscaler_may_add_nodes(status: bytes | None) -> bool:
    """Whether autoscaler v1's status names a node type of its own: `ray start` runs it read-only
    (every node typed ``node_<id>``), which adds no node."""
    import json

    from ray.autoscaler._private.util import format_readonly_node_type

    if not status:
        return False
    mapping = (json.loads(status).get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(t != format_readonly_node_type(n) for n, t in mapping.items())


def shutdown() -> None:
    """Disconnect from (or stop the embedded) Ray."""
    if ray.is_initialized():
        ray.shutdown()


# A round whose estimated work per slot exceeds this many seconds gets a new Tune run. Between rounds Tune
# keeps one idle worker (actor) only (``_ObjectCache(may_keep_one=True)``); the next round's packs then
# start a second one, but a pack that ends before that worker is up is given the kept worker again and
# the new one is removed (``TuneController._maybe_reuse_cached_actor``): with packs of a few seconds a
# round runs on ONE worker. A new ``Tuner.fit`` costs its start (~5-10 s on 2 CPUs) but starts every
# worker together: worth it for long rounds (verify's refinement), not for short ones (tune-base's).
FRESH_RUN_S = 15.0


class _QueueSearcher(Searcher):
    """Tune's source of trials in a :class:`Runner`: pack configs from a queue, in order.

    ``suggest`` returns the next config whose stage has a slot left, None while there is none,
    and ``FINISHED`` once the runner closes. When nothing runs it waits for the next submission
    (or the close): Tune, finding no trial, would otherwise poll once a second."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self._runner = runner
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._closed = False

    def __getstate__(self) -> dict:
        return {"_closed": self._closed}  # Tune may save its searcher: nothing of ours to keep

    def put(self, configs: list[dict[str, Any]]) -> None:
        with self._cond:
            self._queue.extend(configs)
            self._cond.notify_all()

    def close(self, drop: bool = False) -> None:
        """No more submissions; ``drop``: nor the configs still queued (a stop)."""
        with self._cond:
            self._closed = True
            if drop:
                self._queue.clear()
            self._cond.notify_all()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        with self._cond:
            while not self._queue and not self._closed and not self._runner.busy():
                self._cond.wait(IDLE_WAIT_S)
            if self._queue and self._runner.take(self._queue[0]):
                return self._queue.popleft()
            return Searcher.FINISHED if self._closed and not self._queue else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Results go through :class:`PackCallback`; nothing to learn here."""


class _StopFlag(tune.Stopper):
    """Stops the whole run once :attr:`flag` is set (a SIGINT / SIGTERM in the driver)."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.flag


class Batch:
    """The packs of one submission (a stage's round), routed to its recorder; done when every pack ended."""

    def __init__(self, number: int, recorder: Recorder, max_concurrent: int) -> None:
        self.number, self.recorder, self.max_concurrent = number, recorder, max_concurrent
        self.open = 0  # packs queued or running (a re-queued pack counts again)
        self.live = 0  # packs handed to Tune and not ended
        self.done = threading.Event()


class Runner:
    """One Ray Tune run for a whole command (issue 27): ``Tuner.fit`` in a background thread, fed packs
    through a queue (:class:`_QueueSearcher`), so workers (and Tune's set-up) last across rounds and stages.

    :meth:`submit` packs specs (:mod:`orchestrator.engine.packs`) and queues them as one :class:`Batch`,
    whose events go to its own recorder; :meth:`wait` blocks with a timeout (the caller's thread stays
    free for signals); :meth:`stop` ends the run gracefully (Tune stops its trials: nothing more is
    recorded), :meth:`close` once the queue is done. A pack whose worker died is retried by Tune up to
    what its ``max_failures`` leaves, and re-queued (``-retry<n>`` in its folder's name) when Tune ended
    it in error on a death it counted twice. Tune's storage: ``storage_dir/<name>-<time>-<pid>/<pack>/``.
    """

    def __init__(
        self,
        storage_dir: str | Path,
        name: str,
        data: dict[str, Any] | None,
        cpu: float = 1.0,
        gpu: float = 0.0,
        max_failures: int = 2,
        plugins: Sequence[str] = (),
        batched: str = "auto",
    ) -> None:
        self.storage = Path(storage_dir).resolve()
        self.name, self.data, self.cpu, self.gpu = name, data, cpu, gpu
        self.max_failures, self.plugins, self.batched = max_failures, list(plugins), batched
        self.key = self.key_of(storage_dir, data, cpu, gpu, max_failures, plugins, batched)
        self.searcher = _QueueSearcher(self)
        self.stopper = _StopFlag()
        self.callback = PackCallback(None, max_failures)
        self.callback.route, self.callback.on_end, self.callback.on_requeue = self._route, self._ended, self._requeue
        self.batches: dict[int, Batch] = {}
        self.experiment = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.fits = 0  # Tuner.fit calls (one, unless a long round asked for a new run: FRESH_RUN_S)
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._open = 0
        self._numbers = 0
        self._dirs: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    @staticmethod
    def key_of(storage_dir, data, cpu, gpu, max_failures, plugins, batched) -> str:
        """What one run fixes: a submission that differs needs another runner."""
        return json.dumps(
            [str(Path(storage_dir).resolve()), data, cpu, gpu, max_failures, list(plugins), batched],
            sort_keys=True,
            default=str,
        )

    # ---- the queue (driver's threads) ----------------------------------------------------------
    def busy(self) -> bool:
        """Whether a pack is queued or running."""
        return self._open > 0

    def take(self, config: dict[str, Any]) -> bool:
        """Tune may start ``config`` now: its stage's ``max_concurrent`` is not reached (counted as started)."""
        with self._lock:
            batch = self.batches[config["pack"]["batch"]]
            if batch.max_concurrent and batch.live >= batch.max_concurrent:
                return False
            batch.live += 1
            return True

    def _config(self, batch: Batch, members: list[dict[str, Any]], deaths: int, attempt: int) -> dict[str, Any]:
        from orchestrator.engine import packs as packing

        pid = packing.pack_id(members)
        seen = self._dirs.get(pid, 0)
        self._dirs[pid] = seen + 1
        folder = pid if not seen else f"{pid}-retry{seen}"
        pack = {"id": pid, "members": list(members), "batch": batch.number, "deaths": deaths, "attempt": attempt}
        pack["dir"] = folder
        return {"pack": pack, "batched": self.batched, "threads": max(1, int(self.cpu)), "plugins": self.plugins}

    def _queue(self, batch: Batch, configs: list[dict[str, Any]]) -> None:
        with self._lock:
            batch.open += len(configs)
            self._open += len(configs)
        self.searcher.put(configs)

    def submit(
        self,
        specs: list[dict[str, Any]],
        recorder: Recorder,
        *,
        max_concurrent: int = 0,
        pack_seconds: float | None = None,
        seconds: dict[str, float] | None = None,
        slots: int | None = None,
        recorded_in: str | Path | None = None,
    ) -> Batch:
        """Queue ``specs`` in packs; their events go to ``recorder``. See :func:`run_trials` for the
        arguments; ``recorded_in``: the results directory whose trials estimate the packs' seconds."""
        from orchestrator.engine import packs as packing

        if pack_seconds is None:
            pack_seconds = float(os.environ.get("MUTRANSFER_PACK_SECONDS", packing.PACK_SECONDS))
        n_slots = _slots(self.cpu, self.gpu, max_concurrent) if slots is None else slots
        if seconds is None:
            if pack_seconds > 0 and len(specs) > 2 * n_slots:  # else one trial per pack anyway
                trials = _recorded(recorded_in if recorded_in is not None else self.storage.parent)
                seconds = packing.estimate_seconds(specs, trials, threads=max(1, int(self.cpu)))
            else:
                seconds = {}
        with self._lock:
            batch = Batch(self._numbers, recorder, max_concurrent)
            self._numbers += 1
            self.batches[batch.number] = batch
        configs = [
            self._config(batch, list(p), 0, 0) for p in packing.form_packs(specs, seconds, pack_seconds, n_slots)
        ]
        if not configs:
            batch.done.set()
            return batch
        work = sum(seconds.values()) / max(1, n_slots)
        if self._thread is not None and len(configs) > 1 and work > FRESH_RUN_S:
            self._restart()  # a long round on every worker (see FRESH_RUN_S)
        self._queue(batch, configs)
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="ray-tune", daemon=True)
            self._thread.start()
        return batch

    def wait(self, batch: Batch, timeout: float) -> bool:
        """True once every pack of ``batch`` ended; False after ``timeout`` seconds.

        Raises:
            RuntimeError: Tune's run ended (an error in Tune, or a stop) before the batch did.
        """
        if batch.done.wait(timeout):
            return True
        if self._thread is not None and not self._thread.is_alive() and not batch.done.is_set():
            raise RuntimeError(f"Ray Tune's run ended before its trials did: {self.error!r}") from self.error
        return False

    def _restart(self) -> None:
        """End the current Tune run (every earlier batch has ended) and let the next submission start a
        new ``Tuner.fit``, which starts a worker for every slot at once."""
        self.close()
        self.searcher, self.stopper = _QueueSearcher(self), _StopFlag()
        # the pid last, as every run's folder ends (engine.overheads counts a command's packs by it)
        self.experiment = f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-r{self.fits}-{os.getpid()}"
        self._thread = None

    def stop(self, timeout: float = 60.0) -> None:
        """End the run now: Tune stops its trials (their members are not recorded) and returns."""
        self.stopper.flag = True
        self.searcher.close(drop=True)  # no pack more: Tune would start one only to stop it
        self.close(timeout)

    def close(self, timeout: float | None = None) -> None:
        """No more submissions: Tune ends once its trials did; wait for it (``timeout`` seconds at most)."""
        self.searcher.close()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- Tune's thread -------------------------------------------------------------------------
    def _route(self, pack: dict[str, Any]) -> Recorder:
        return self.batches[pack["batch"]].recorder

    def _ended(self, pack: dict[str, Any]) -> None:
        with self._lock:
            batch = self.batches[pack["batch"]]
            batch.open -= 1
            batch.live -= 1
            self._open -= 1
            if batch.open == 0:
                batch.done.set()
                del self.batches[batch.number]
        with self.searcher._cond:
            self.searcher._cond.notify_all()

    def _requeue(self, pack: dict[str, Any], members: list[dict[str, Any]], deaths: int) -> None:
        batch = self.batches[pack["batch"]]
        attempt = int(pack.get("attempt", 0)) + 1
        if attempt > self.max_failures:  # re-queued at every try (a death Tune reported but never retried)
            for m in members:
                batch.recorder.errored(
                    m["trial_id"], f"lost worker: not run after {self.max_failures + 1} rounds of retries"
                )
            return
        self._queue(batch, [self._config(batch, members, deaths, attempt)])

    def _main(self) -> None:
        try:
            self.fits += 1
            self._fit()
        except BaseException as exc:  # noqa: BLE001 - :meth:`wait` raises it in the waiting thread
            self.error = exc

    def _fit(self) -> None:
        # Tune's own JSON/CSV logs (which its ResultGrid reads) but not TensorBoard's, which warns at every inf.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables; progress.py reports
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "16")  # a custom searcher's default is 1 at a time
        self.storage.mkdir(parents=True, exist_ok=True)
        resources = {"cpu": self.cpu, "gpu": self.gpu} if self.gpu else {"cpu": self.cpu}
        data_ref = ship(self.data, plugins=self.plugins) if self.data is not None else None
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(pack_trainable, data_ref=data_ref), resources),
            tune_config=tune.TuneConfig(
                search_alg=self.searcher,
                num_samples=-1,  # until the searcher says FINISHED
                reuse_actors=True,  # one worker runs many packs, across rounds and stages
                trial_name_creator=lambda t: t.config["pack"]["dir"],
                trial_dirname_creator=lambda t: t.config["pack"]["dir"],
            ),
            run_config=tune.RunConfig(
                name=self.experiment,
                storage_path=str(self.storage),
                failure_config=tune.FailureConfig(max_failures=self.max_failures),
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), self.callback],
                stop=self.stopper,
                verbose=0,
            ),
        )
        tuner.fit()


def _slots(cpu: float, gpu: float, max_concurrent: int) -> int:
    """Packs that run at once: ``max_concurrent``, else what the connected cluster's CPUs (GPUs) hold now."""
    if max_concurrent:
        return max(1, int(max_concurrent))
    have = ray.cluster_resources() if ray.is_initialized() else {}
    n = int(have.get("CPU", 1) // cpu) if cpu > 0 else int(have.get("CPU", 1))
    if gpu > 0:
        n = min(n, int(have.get("GPU", 0) // gpu))
    return max(1, n)


def _recorded(results_dir: str | Path):
    """The trials recorded in a results directory, if any."""
    from orchestrator.stores.results_store import ResultsStore

    try:
        return ResultsStore(Path(results_dir)).trials()
    except Exception:  # an estimate only: without records the trials are calibrated
        return None


def run_trials(
    specs: list[dict[str, Any]],
    recorder: Recorder,
    storage_dir: str | Path,
    name: str,
    cpu: float = 1.0,
    gpu: float = 0.0,
    max_concurrent: int = 0,
    max_failures: int = 2,
    plugins: Sequence[str] = (),
    *,
    batched: str = "auto",
    pack_seconds: float | None = None,
    seconds: dict[str, float] | None = None,
    slots: int | None = None,
) -> None:
    """Run ``specs`` (``TrialSpec.to_dict()``) on Ray Tune in packs (:mod:`orchestrator.engine.packs`), recording
    every spec as its own trial through ``recorder``; every worker imports ``plugins`` first. One
    :class:`Runner` for this call alone (a session keeps one for all its rounds).

    ``pack_seconds``: the estimated training seconds a pack aims at (default ``packs.PACK_SECONDS``, or
    ``$MUTRANSFER_PACK_SECONDS``; 0: one trial per pack). ``seconds``: estimated seconds by trial id
    (default: ``packs.estimate_seconds`` from the trials recorded in ``storage_dir``'s parent, else
    calibrated). ``slots``: packs at once (default ``max_concurrent``, else the cluster's CPUs / ``cpu``):
    at least twice as many packs are made when there are that many specs (0: no such floor).
    A pack whose worker dies is retried up to ``max_failures`` times without its finished members.
    """
    if not specs:
        return
    runner = Runner(storage_dir, name, specs[0]["data"], cpu, gpu, max_failures, plugins, batched)
    try:
        batch = runner.submit(
            specs, recorder, max_concurrent=max_concurrent, pack_seconds=pack_seconds, seconds=seconds, slots=slots
        )
        while not runner.wait(batch, 0.5):
            pass
    except BaseException:
        runner.stop()
        raise
    runner.close()
