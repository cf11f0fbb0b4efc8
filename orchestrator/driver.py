"""The driver's set-up, written once for every command that runs trials (sweep, tune-base, verify).

:func:`preflight` checks what answers in seconds; :func:`ray_held` connects to Ray (or starts it
embedded) for as long as a block runs and stops what it started; :func:`driver_session` is the
whole set-up of one run: Ray, the resolved config written, MLflow tracking and the progress line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import Sweep
from .errors import BadInput
from .paths import check_results_dir, inside
from .preflight import check_fit, check_local_device, check_local_resources, probe_address
from .progress import Progress
from .results_store import ResultsStore
from .tracking import Tracker, default_tracking_uri


def embedded(address: str | None) -> bool:
    """True when ``ray.init(address)`` starts Ray here rather than joining a cluster."""
    return (address or os.environ.get("RAY_ADDRESS") or "local") == "local"


def preflight(sweep: Sweep, results_dir: str | Path, address: str | None) -> Path:
    """Checks that answer in seconds, before Ray starts or anything is written; the resolved results dir.

    Raises:
        BadInput: ``--results`` is a file; a path built from the sweep's name or experiment would
            lie outside it; nothing listens at ``address``; this machine cannot give the device
            or the GPUs asked for (embedded Ray).
    """
    results_dir = check_results_dir(results_dir)
    inside(results_dir / sweep.name / "tune", results_dir, f"{sweep.source}: name={sweep.name!r}:")
    experiment = sweep.config.tracking.experiment or sweep.name
    inside(results_dir / "mlartifacts" / experiment, results_dir, f"{sweep.source}: tracking.experiment:")
    probe_address(address)
    if embedded(address):
        check_local_device({t.trainer["device"] for t in sweep.trials}, f"{sweep.source}: trainer.device")
        check_local_resources(float(sweep.config.resources.cpu), float(sweep.config.resources.gpu), sweep.source)
    return results_dir


def start_ray(address: str | None, cpu: float, gpu: float, src: str) -> tuple[bool, str | None]:
    """Connect (or start embedded Ray) and check that a trial's resources can be met.

    Returns:
        ``(started, note)``: whether this call started Ray, and a note when trials must wait for
        nodes that the autoscaler may add (None when some node can run a trial now).
    """
    from . import tune_runner  # imports Ray: only once the input is known to be good

    shown = f"--address {address}" if address else "embedded Ray"
    try:
        started = tune_runner.connect(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise BadInput(f"{shown}: cannot connect to Ray ({why})") from None
    try:
        return started, check_fit(cpu, gpu, tune_runner.cluster_offer(), src, embedded(address))
    except BadInput:
        if started:
            tune_runner.shutdown()
        raise


@contextmanager
def ray_held(sweep: Sweep, address: str | None, needed: bool = True) -> Iterator[str | None]:
    """Hold a Ray connection (when ``needed``) while the block runs; stop Ray if this call started it.

    Yields the note for trials that must wait for nodes (None when some node can run one now,
    or when Ray was not needed). A nested hold finds Ray connected and leaves it to the outer one.
    """
    cfg = sweep.config
    started, waiting = (
        start_ray(address, cfg.resources.cpu, cfg.resources.gpu, sweep.source) if needed else (False, None)
    )
    try:
        yield waiting
    finally:
        if started:
            from . import tune_runner

            tune_runner.shutdown()


@dataclass
class Session:
    """What a run of trials records through: MLflow (None when not tracking) and the progress line."""

    tracker: Tracker | None
    progress: Progress

    @property
    def tracking_uri(self) -> str:
        return self.tracker.uri if self.tracker else ""


@contextmanager
def driver_session(
    sweep: Sweep,
    results_dir: Path,
    store: ResultsStore,
    config_text: str,
    *,
    address: str | None,
    needs_ray: bool,
    track: bool,
    tracked_name: str,
    experiment: str | None,
    total: int,
    skipped: int,
    stream: TextIO | None,
) -> Iterator[Session]:
    """Ray held, ``config_text`` written to ``store``'s sweep.yaml, tracking started, progress shown.

    Args:
        sweep: the sweep (its resources, tracking and objective).
        results_dir: the results root (MLflow's default store and artifacts live there).
        store: where the trials go (``<results>/<name>`` or, for tune-base, ``<results>/<name>/base``).
        config_text: the resolved config to write.
        address: the Ray address (None: embedded).
        needs_ray: whether trials will run (else Ray is not started).
        track: log to MLflow.
        tracked_name: the MLflow sweep name (the parent run's), ``experiment`` its experiment.
        total, skipped: trials in all and already done, for the progress line.
        stream: where progress goes (default stderr).
    """
    cfg = sweep.config
    with ray_held(sweep, address, needs_ray) as waiting:
        store.write_config(config_text)
        tracker = None
        if track:
            tracker = Tracker(
                default_tracking_uri(results_dir, cfg.tracking.uri),
                tracked_name,
                experiment,
                artifact_root=results_dir / "mlartifacts",
            )
            tracker.start()
        progress = Progress(total, skipped, cfg.objective.metric, cfg.objective.mode, stream)
        progress.waiting = waiting
        progress.render(force=True)
        yield Session(tracker, progress)
        progress.close()
