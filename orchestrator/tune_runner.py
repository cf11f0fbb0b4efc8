"""Ray Tune: the pure trainable, the recording callback, and the Tuner. The only module importing ray.tune.

The trainable builds a trainer, runs epochs and calls ``tune.report`` once per epoch;
it writes nothing. The driver's :class:`RecordingCallback` hands every event to a
plain-Python recorder (``orchestrator.sweep.Recorder``), which alone writes Parquet and MLflow.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from analysis.schema import DEFAULT_METRIC, DEFAULT_MODE

from .data_shipping import ship

# Test hook: a trial dies (os._exit) once after its first epoch if this names a marker file
# that does not exist yet; the marker is created atomically, so exactly one trial dies once.
CRASH_ONCE_ENV = "MUTRANSFER_TEST_CRASH_ONCE"
# Test hook: "LR:FILE": a trial whose lr is LR (any, for "*") raises in its set-up (and appends a line to FILE each time).
SETUP_ERROR_ENV = "MUTRANSFER_TEST_SETUP_ERROR"


def _maybe_crash() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(17)


class SetupError(Exception):
    """A trial's set-up failed (bad config reaching a worker, a trainer that cannot be built): it would
    fail the same way on every attempt, so it is reported once as ``failed`` and not retried."""


def _device(tc) -> str:
    """The torch device of a trial: ``auto`` is CUDA when Ray assigned the trial a GPU, else CPU."""
    if tc.device != "auto":
        return tc.device
    return "cuda" if ray.get_gpu_ids() else "cpu"


def _setup(spec: dict[str, Any], threads: int, data_ref: Any):
    """The trial's config (device resolved), data and trainer; any exception is a :class:`SetupError`."""
    import torch

    from trainers import TrainerConfig, make_trainer

    from .data_shipping import dataset_for_trial

    try:
        tc = TrainerConfig(**spec["trainer"])
        _maybe_fail_setup(tc.lr)
        tc = tc.replace(device=_device(tc))
        torch.set_num_threads(max(1, int(threads)))
        data = dataset_for_trial(spec["data"], data_ref, tc.torch_device, tc.torch_dtype, tc.seed)
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


def _run_spec(spec: dict[str, Any], threads: int, data_ref: Any, extra: Callable[[dict], dict] | None = None) -> None:
    """Train one trial spec, ``tune.report`` each epoch's history row (plus where it ran, plus ``extra(row)``).

    A set-up error is reported once as a last result ``{"failed": True, "error": ...}`` and the
    trial returns: Tune sees it complete and does not retry it (``max_failures`` is for lost workers).
    """
    from trainers import train

    started_at = time.time()  # epoch seconds (Tune's own timestamps are whole seconds): for benchmarks
    where = {
        "trial_id": spec["trial_id"],
        "node": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "started_at": started_at,
    }
    try:
        tc, data, trainer = _setup(spec, threads, data_ref)
    except SetupError as exc:
        tune.report(
            {
                **where,
                **(extra({}) if extra else {}),
                "failed": True,
                "error": str(exc),
                "last": True,
                "reported_at": time.time(),
            }
        )
        return
    where["device_used"] = str(tc.torch_device)
    epochs = int(spec["train"]["epochs"])

    def report(row: dict) -> None:
        # "last" lets the driver record the trial from this result, before Tune tells a searcher
        # (Optuna) that the trial completed: Tune calls the searcher before its callbacks.
        last = bool(row.get("diverged")) or int(row["epoch"]) >= epochs
        tune.report({**row, **where, **(extra(row) if extra else {}), "last": last, "reported_at": time.time()})
        _maybe_crash()

    train(trainer, data, epochs, spec["train"]["batch_size"], seed=tc.seed, on_epoch=report)


def trainable(config: dict[str, Any], data_ref: Any = None) -> None:
    """One trial: ``config["trial"]`` is a ``TrialSpec.to_dict()``; reports each epoch's history row.

    ``config["plugins"]`` (the sweep's ``plugins``) are imported first, then ``$MUTRANSFER_PLUGINS``.
    """
    from .plugins import import_all

    import_all(config.get("plugins", ()))
    _run_spec(config["trial"], config.get("threads", 1), data_ref)


class Recorder(Protocol):
    """What the driver does with trial events (see ``orchestrator.sweep.Recorder``)."""

    def started(self, trial_id: str) -> None: ...
    def result(self, trial_id: str, result: dict) -> None: ...
    def restarted(self, trial_id: str) -> None: ...
    def completed(self, trial_id: str) -> None: ...
    def errored(self, trial_id: str, error: str) -> None: ...


class RecordingCallback(tune.Callback):
    """Forwards Tune's trial events to a :class:`Recorder` in the driver."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @staticmethod
    def _id(trial) -> str:
        return trial.config["trial"]["trial_id"]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.recorder.started(self._id(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.recorder.result(self._id(trial), result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recorder.restarted(self._id(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.recorder.completed(self._id(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.recorder.errored(self._id(trial), _error_text(trial))


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
    """What the connected cluster offers a trial (:class:`orchestrator.preflight.ClusterOffer`): the alive
    nodes' resources and, from the autoscaler's cluster config, the node types it may still add."""
    from .preflight import ClusterOffer

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
) -> None:
    """Run ``specs`` (``TrialSpec.to_dict()``) on Ray Tune, one trial each, recording through ``recorder``;
    every worker imports ``plugins`` first."""
    _fit(
        trainable,
        specs[0]["data"] if specs else None,
        {"trial": tune.grid_search(specs)},
        storage_dir,
        name,
        cpu,
        gpu,
        max_failures,
        [RecordingCallback(recorder)],
        plugins=plugins,
        max_concurrent_trials=max_concurrent or None,
        trial_name_creator=lambda t: t.config["trial"]["trial_id"],
        trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
    )


# ---- Optuna through Ray Tune (tune-base) --------------------------------------------------
def search_trainable(config: dict[str, Any], data_ref: Any = None) -> None:
    """One Optuna trial: ``config["template"]`` with the suggested ``config["params"]`` set, run as a sweep trial."""
    import math

    from .config import searched_spec
    from .plugins import import_all

    import_all(config.get("plugins", ()))  # before searched_spec builds a TrainerConfig
    spec = searched_spec(config["template"], config["params"])
    metric, mode = config["objective"]["metric"], config["objective"]["mode"]
    worst = math.inf if mode == "min" else -math.inf

    def objective(row: dict) -> dict:
        value = float(row.get(metric, math.nan))
        return {"objective": worst if row.get("diverged") or not math.isfinite(value) else value}

    _run_spec(spec, config.get("threads", 1), data_ref, objective)


def _domain(p: dict[str, Any]):
    """A Tune domain from a checked search-space entry (``tune_base.search_space``)."""
    if "choices" in p:
        return tune.choice(list(p["choices"]))
    if p["type"] == "int":
        return (tune.lograndint if p["log"] else tune.randint)(int(p["low"]), int(p["high"]) + 1)
    return (tune.loguniform if p["log"] else tune.uniform)(float(p["low"]), float(p["high"]))


class SearchCallback(RecordingCallback):
    """RecordingCallback for searched trials: the trial's spec is known only once Optuna suggested it."""

    def __init__(self, recorder, make_spec) -> None:
        super().__init__(recorder)
        self.make_spec = make_spec
        self.ids: dict[str, str] = {}  # Tune's trial id -> our trial id

    def _id(self, trial) -> str:
        if trial.trial_id not in self.ids:
            spec = self.make_spec(trial.config["template"], trial.config["params"])
            self.recorder.register(spec)
            self.ids[trial.trial_id] = spec["trial_id"]
        return self.ids[trial.trial_id]


def run_search(
    template: dict[str, Any],
    space: list[dict[str, Any]],
    make_spec,
    recorder: Recorder,
    storage_dir: str | Path,
    name: str,
    study_name: str,
    study_storage,
    num_samples: int,
    metric: str = DEFAULT_METRIC,
    mode: str = DEFAULT_MODE,
    seed: int = 0,
    cpu: float = 1.0,
    gpu: float = 0.0,
    max_concurrent: int = 0,
    max_failures: int = 2,
    plugins: Sequence[str] = (),
    sampler=None,
) -> None:
    """Run ``num_samples`` Optuna trials through Ray Tune's ``OptunaSearch`` on the study
    ``study_name`` in ``study_storage`` (an ``optuna.storages.BaseStorage``; created if absent).

    ``sampler``: an Optuna sampler (``tune_base.base_sampler``); default TPE seeded with ``seed``.

    Each trial is ``template`` with the searched keys set; Optuna sees the trial's last
    ``objective`` report (``metric``, a history column, or ±inf when the trial diverged). The driver records
    a finished trial (Parquet, then MLflow) before Optuna is told, so a driver killed in between
    leaves a RUNNING Optuna trial that ``tune_base`` can match to its Parquet row.
    """
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    callback = SearchCallback(recorder, make_spec)

    class RecordFirst(OptunaSearch):
        def on_trial_result(self, trial_id, result):
            pass  # no pruner: Optuna needs only the final value

        def on_trial_complete(self, trial_id, result=None, error=False):
            if result and result.get("failed"):  # a set-up error, reported once: FAIL in the study
                result, error = None, True
            if result and not error and trial_id in callback.ids:
                recorder.completed(callback.ids[trial_id])  # Parquet before the study: see above
            super().on_trial_complete(trial_id, result=result, error=error)

    if sampler is None:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, num_samples // 3)))
    searcher = RecordFirst(
        metric="objective",
        mode=mode,
        study_name=study_name,
        storage=study_storage,
        sampler=sampler,
    )
    if max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    space_of_trial = {
        "params": {p["name"]: _domain(p) for p in space},
        "template": template,
        "objective": {"metric": metric, "mode": mode},
    }
    _fit(
        search_trainable,
        template["data"],
        space_of_trial,
        storage_dir,
        name,
        cpu,
        gpu,
        max_failures,
        [callback],
        plugins=plugins,
        search_alg=searcher,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent or None,
    )
