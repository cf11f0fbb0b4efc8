"""The driver's checks and Ray connection, used by the one session of a command (:mod:`.session`).

:func:`preflight` checks what answers in seconds; :func:`start_ray` connects to Ray (or starts it
embedded) and checks that a trial's resources can be met.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.engine.preflight import check_fit, check_local_device, check_local_resources, probe_address
from orchestrator.errors import BadInput
from orchestrator.spec.config import Sweep
from orchestrator.stores.paths import check_results_dir, inside


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
    from orchestrator.engine import tune_runner  # imports Ray: only once the input is known to be good

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
