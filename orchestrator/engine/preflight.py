"""Checks that answer in seconds, before Ray starts or anything is written.

* :func:`probe_address`: a TCP connect with a short timeout to the Ray address (``ray.init``
  on an address where nothing listens retries for minutes).
* :func:`check_local_device`: ``cuda`` asked for on a machine whose torch has no CUDA.
* :func:`check_fit`: a trial's cpu/gpu request against the nodes there are and the nodes the
  autoscaler may still add (Tune would wait forever for resources that never come).

No Ray here: :mod:`orchestrator.engine.tune_runner` gathers what the cluster offers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.errors import BadInput

PROBE_TIMEOUT_S = 3.0


def _host_port(address: str, shown: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"{shown}: not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def probe_address(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """BadInput naming the address unless something accepts a TCP connection there within ``timeout``.

    ``None`` means embedded Ray, unless ``$RAY_ADDRESS`` names a cluster (``ray.init`` reads it);
    ``auto`` (and ``local``) are left to Ray, which answers at once when there is no cluster.
    """
    shown = f"--address {address}"
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
        shown = f"RAY_ADDRESS={address}"
    if address is None or address in ("auto", "local"):
        return
    host, port = _host_port(address, shown)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise BadInput(f"{shown}: unknown host {host!r} ({exc.strerror or exc})") from None
    except OSError as exc:
        why = f"no answer within {timeout:g}s" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise BadInput(f"{shown}: nothing answers at {host}:{port} ({why}); is the Ray head running there?") from None


def check_local_device(devices: Iterable[str], where: str) -> None:
    """BadInput when ``cuda`` (or ``cuda:N``) is asked for and this machine's torch cannot give it."""
    cuda = sorted({d for d in devices if str(d).startswith("cuda")})
    if not cuda:
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for d in cuda:
        idx = int(d.split(":", 1)[1]) if ":" in d and d.split(":", 1)[1].isdigit() else 0
        if idx >= n:
            have = "no CUDA device" if n == 0 else f"{n} CUDA device(s)"
            raise BadInput(f"{where}={d}: this machine has {have} (torch {torch.__version__}); use device=cpu or auto")


def check_local_resources(cpu: float, gpu: float, src: str) -> None:
    """Embedded Ray: BadInput when a trial asks for more CPUs than this machine has, or for GPUs
    that torch here cannot see (Tune would wait for them forever)."""
    have = os.cpu_count() or 1
    if cpu > have:
        raise BadInput(
            f"{src}: resources.cpu={cpu:g} per trial, but this machine has {have} CPU(s) "
            "(embedded Ray); lower resources.cpu or give --address of a cluster"
        )
    if not gpu > 0:
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu > n:
        raise BadInput(
            f"{src}: resources.gpu={gpu:g} per trial, but this machine has {n} GPU(s) "
            "usable by torch (embedded Ray); lower resources.gpu or give --address of a GPU cluster"
        )


@dataclass
class ClusterOffer:
    """What a cluster offers a trial: the alive nodes' resources, and the node types its autoscaler
    may still add (``None``: no autoscaler config found; ``autoscaling``: an autoscaler is running)."""

    nodes: list[dict[str, float]] = field(default_factory=list)
    node_types: list[dict[str, float]] | None = None
    autoscaling: bool = False


def _fits(request: dict[str, float], node: dict[str, float]) -> bool:
    return all(float(node.get(k, 0.0)) >= v for k, v in request.items() if v > 0)


def check_fit(cpu: float, gpu: float, offer: ClusterOffer, where: str, embedded: bool) -> str | None:
    """None when some alive node can run a trial now; a note when only nodes yet to be added can.

    Raises:
        BadInput: no node, present or that the autoscaler may add, has ``cpu`` CPUs and ``gpu`` GPUs.
    """
    request = {"CPU": float(cpu), "GPU": float(gpu)}
    if any(_fits(request, n) for n in offer.nodes):
        return None
    largest = max(offer.nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    have = f"the largest node has {largest.get('CPU', 0):g} CPU, {largest.get('GPU', 0):g} GPU"
    ask = f"resources cpu={cpu:g} gpu={gpu:g} per trial"
    if not embedded:
        if offer.node_types is not None and any(_fits(request, t) for t in offer.node_types):
            return f"trials wait for resources ({ask}): the autoscaler may add a node that has them"
        if offer.node_types is None and offer.autoscaling:
            return f"trials wait for resources ({ask}; {have}): an autoscaler is running"
    scope = "this machine (embedded Ray)" if embedded else "the cluster"
    later = "" if embedded else ", nor may its autoscaler add one"
    raise BadInput(f"{where}: {ask}, but no node of {scope} has them ({have}{later})")
