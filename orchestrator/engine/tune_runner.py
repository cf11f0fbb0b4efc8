"""Ray Tune: the pure trainables, the recording callbacks, and the Tuner. The only module importing ray.tune.

A grid sweep's Tune trial is a **pack** of trial specs (:mod:`orchestrator.engine.packs`: specs that share
their costly set-up, about ``PACK_SECONDS`` of training together): :func:`pack_trainable` builds each
member's trainer in turn (the data made once) and runs its epochs; it writes nothing. Each member's
start and each epoch's history row are events sent in batches (one ``tune.report`` at most every
``FLUSH_S`` seconds and at the end, with a checkpoint naming the members finished so far), so a pack
that Tune retries after its worker died skips the members it reported finished.
The driver's :class:`PackCallback` hands every member's events to a plain-Python recorder
(``orchestrator.engine.recorder.Recorder``), which alone writes Parquet and MLflow; each member stays one
recorded trial. tune-base's searched trials are one Tune trial each (:class:`SearchCallback`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

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

    def __init__(self, members: list[dict[str, Any]], deaths: int) -> None:
        self.members = members
        self.finished: set[str] = set()
        self.running: set[str] = set()  # started in this attempt, not finished
        self.ran: set[str] = set()  # started in any attempt
        self.deaths = deaths  # lost workers counted against max_failures, over every round
        self.stale = False  # a death was handled and the pack has not started again since

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
    that Tune ends in error with fewer deaths than ``max_failures`` + 1 is put in :attr:`requeued`,
    and :func:`run_trials` runs its unfinished members again.
    """

    def __init__(self, recorder: Recorder, max_failures: int) -> None:
        self.recorder, self.max_failures = recorder, max_failures
        self.packs: dict[str, _Pack] = {}  # Tune's trial id -> the pack
        self.deaths: dict[str, int] = {}  # pack id -> deaths before this round
        self.requeued: list[tuple[list[dict[str, Any]], int]] = []  # (unfinished members, deaths so far)

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment's state (for ``Tuner.restore``, unused here):
        leave out the recorder, which may hold what cannot be pickled (locks, open stores)."""
        return {**self.__dict__, "recorder": None}

    def _pack(self, trial) -> _Pack:
        if trial.trial_id not in self.packs:
            cfg = trial.config["pack"]
            self.packs[trial.trial_id] = _Pack(list(cfg["members"]), self.deaths.get(cfg["id"], 0))
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
            self.recorder.started(mid)
            return
        self.recorder.result(mid, event)
        if event.get("last"):
            pack.finished.add(mid)
            pack.running.discard(mid)

    def _lost_worker(self, pack: _Pack) -> None:
        for mid in sorted(pack.running):
            self.recorder.restarted(mid)
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
        for m in pack.unfinished():
            mid = m["trial_id"]
            pack.finished.add(mid)
            if mid in pack.ran:
                self.recorder.completed(mid)
            else:
                self.recorder.errored(mid, "its pack ended before it ran")

    def on_trial_error(self, iteration, trials, trial, **info):
        pack = self._pack(trial)
        deaths = pack.deaths + (0 if pack.stale else 1)
        if deaths <= self.max_failures and pack.unfinished():
            self._lost_worker(pack)
            self.requeued.append((pack.unfinished(), deaths))
            pack.finished |= {m["trial_id"] for m in pack.unfinished()}  # this Tune trial is over
            return
        error = _error_text(trial)
        for m in pack.unfinished():
            pack.finished.add(m["trial_id"])
            self.recorder.errored(m["trial_id"], error)


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


def _fit(
    trainable,
    data: dict[str, Any] | None,
    param_space: dict[str, Any],
    storage_dir: str | Path,
    name: str,
    cpu: float,
    gpu: float,
    max_failures: int,
    callbacks: list,
    plugins: Sequence[str] = (),
    **tune_config: Any,
) -> None:
    """Build and run one Tuner: ``trainable`` with the dataset shipped once, ``cpu``/``gpu`` per trial,
    Tune's JSON/CSV logs under ``storage_dir``, ``max_failures`` retries, ``callbacks`` after them;
    ``plugins`` (modules) go to every trial in its config, imported there before anything else."""
    # Tune's own JSON/CSV logs (which its ResultGrid reads) but not TensorBoard's, which warns at every inf.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables; progress.py reports
    storage = Path(storage_dir).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    resources = {"cpu": cpu, "gpu": gpu} if gpu else {"cpu": cpu}
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, data_ref=ship(data, plugins=plugins) if data is not None else None),
            resources,
        ),
        param_space={**param_space, "threads": max(1, int(cpu)), "plugins": list(plugins)},
        tune_config=tune.TuneConfig(reuse_actors=True, **tune_config),  # one worker runs many trials
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
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


def _recorded(storage_dir: str | Path):
    """The trials recorded in the results directory above Tune's storage (``<results>/<sweep>/tune``), if any."""
    from orchestrator.stores.results_store import ResultsStore

    try:
        return ResultsStore(Path(storage_dir).parent).trials()
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
    every spec as its own trial through ``recorder``; every worker imports ``plugins`` first.

    ``pack_seconds``: the estimated training seconds a pack aims at (default ``packs.PACK_SECONDS``, or
    ``$MUTRANSFER_PACK_SECONDS``; 0: one trial per pack). ``seconds``: estimated seconds by trial id
    (default: ``packs.estimate_seconds`` from the trials recorded in ``storage_dir``'s parent, else
    calibrated). ``slots``: packs at once (default ``max_concurrent``, else the cluster's CPUs / ``cpu``):
    at least twice as many packs are made when there are that many specs (0: no such floor).
    A pack whose worker dies is retried up to ``max_failures`` times without its finished members.
    """
    from orchestrator.engine import packs as packing

    if not specs:
        return
    if pack_seconds is None:
        pack_seconds = float(os.environ.get("MUTRANSFER_PACK_SECONDS", packing.PACK_SECONDS))
    n_slots = _slots(cpu, gpu, max_concurrent) if slots is None else slots
    if seconds is None:
        if pack_seconds > 0 and len(specs) > 2 * n_slots:  # else one trial per pack anyway
            seconds = packing.estimate_seconds(specs, _recorded(storage_dir), threads=max(1, int(cpu)))
        else:
            seconds = {}
    callback = PackCallback(recorder, max_failures)
    todo = [(p, 0) for p in packing.form_packs(specs, seconds, pack_seconds, n_slots)]
    for attempt in range(max_failures + 1):
        for used in sorted({d for _, d in todo}):
            group = [{"id": packing.pack_id(p), "members": list(p)} for p, d in todo if d == used]
            for g in group:
                callback.deaths[g["id"]] = used
            callback.packs.clear()  # Tune's trial ids are per Tuner
            _fit(
                pack_trainable,
                specs[0]["data"],
                {"pack": tune.grid_search(group), "batched": batched},
                storage_dir,
                name if not attempt else f"{name}-retry{attempt}-{used}",
                cpu,
                gpu,
                max_failures - used,
                [callback],
                plugins=plugins,
                max_concurrent_trials=max_concurrent or None,
                trial_name_creator=lambda t: t.config["pack"]["id"],
                trial_dirname_creator=lambda t: t.config["pack"]["id"],
            )
        todo, callback.requeued = [(list(p), d) for p, d in callback.requeued], []
        if not todo:
            return
    for members, _ in todo:  # re-queued every round (a death Tune reported but never retried): give up
        for m in members:
            recorder.errored(m["trial_id"], f"lost worker: not run after {max_failures + 1} rounds of retries")
