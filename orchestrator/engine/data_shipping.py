"""Datasets for trials on any node: loaded once where the files are, shipped through Ray's object store.

A trial may land on a node with no copy of Fashion-MNIST (a fresh GPU worker, a pod without the
data volume). The driver loads the sweep's dataset once (float32, on CPU) and puts it into Ray's
object store; every trial takes it from there and casts it to its own device and dtype, so a
trial computes exactly what it would with the files on its own disk. If the driver has no copy
either, the first cluster node that has one loads it. When no node has it, one
:class:`trainers.DataError` names every place it was looked for. A generated dataset
(``teacher``) is made from its seed where the trial runs and is not shipped.

Call sites in ``orchestrator/engine/tune_runner.py`` (the module that owns ``ray.tune``), for
``pack_trainable``/``run_trials``::

    # building the Tuner:
    tune.with_resources(tune.with_parameters(pack_trainable, data_ref=ship(specs[0]["data"])), resources)

    # in pack_trainable(config, data_ref=None), instead of load_dataset(...):
    data = dataset_for_trial(spec["data"], data_ref, tc.torch_device, tc.torch_dtype, tc.seed)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray
import torch


def shipped() -> tuple[str, ...]:
    """The registered datasets read from files (``from_files``); the others are generated on the trial's node."""
    from trainers import DATASET_REGISTRY

    return tuple(name for name, entry in DATASET_REGISTRY.items() if entry.from_files)


def __getattr__(name: str):
    """``SHIPPED``, kept importable: :func:`shipped` at the time of reading."""
    if name == "SHIPPED":
        return shipped()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_here(data: Mapping[str, Any]):
    """The dataset from this process's disk (float32, CPU); DataError if it is not here."""
    from trainers import load_dataset

    return load_dataset(
        data["dataset"], data.get("subset") or None, data.get("test_subset") or None, device="cpu", dtype=torch.float32
    )


@ray.remote(num_cpus=0)
def _where(data: dict, plugins: list) -> str:
    """On one node: where the dataset's files are there (its registered ``check``), or why not (prefixed ``!``)."""
    from orchestrator.spec.plugins import import_all
    from trainers import DataError, dataset_entry

    import_all(plugins)
    entry = dataset_entry(data["dataset"])
    try:
        if entry.check is None:
            _load_here(data)
            return "loadable"
        return entry.check()
    except DataError as exc:
        return f"!{_reason(exc)}"


@ray.remote(num_cpus=0)
def _load_remote(data: dict, plugins: list):
    from orchestrator.spec.plugins import import_all

    import_all(plugins)
    return _load_here(data)


def _reason(exc: Exception) -> str:
    """The first clause of a DataError (what is missing and where it looked), without the advice."""
    return str(exc).split(";")[0]


def _on(node_id: str) -> dict:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def ship(data: Mapping[str, Any], timeout_s: float = 120.0, plugins: Sequence[str] = ()) -> ray.ObjectRef | None:
    """Put the sweep's dataset into Ray's object store, once, for every trial to read.

    Args:
        data: the sweep's ``data`` section (``dataset``, ``subset``, ``test_subset``).
        timeout_s: how long to wait for the cluster's nodes to say whether they have the files.
        plugins: modules the node probes import first (a plugin's dataset is registered there).

    Returns:
        An ``ObjectRef`` to a :class:`trainers.Dataset` (float32, CPU), or None for a dataset
        that is generated where the trial runs.

    Raises:
        trainers.DataError: neither the driver nor any node of the cluster can read the dataset;
            the message names the driver's reason and each node's.
    """
    from trainers import DataError

    if data["dataset"] not in shipped():
        return None
    try:
        return ray.put(_load_here(data))
    except DataError as here:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probes = {n["NodeID"]: _where.options(**_on(n["NodeID"])).remote(dict(data), list(plugins)) for n in nodes}
        ready, _ = ray.wait(list(probes.values()), num_returns=len(probes), timeout=timeout_s)
        answers = {
            nid: (ray.get(ref) if ref in ready else f"!no answer in {timeout_s:.0f}s") for nid, ref in probes.items()
        }
        for nid, where in answers.items():
            if not where.startswith("!"):
                return _load_remote.options(**_on(nid)).remote(dict(data), list(plugins))
        ips = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
        reasons = "; ".join(f"node {nid[:8]} ({ips[nid]}): {w[1:]}" for nid, w in answers.items())
        raise DataError(
            f"data.dataset={data['dataset']}: no node can read it. Driver: {_reason(here)}. "
            f"Cluster ({len(nodes)} nodes): {reasons or 'no node alive'}. Put the four IDX files "
            f"on one node (MUTRANSFER_DATA, `mutransfer fetch-data`, or Debian's "
            f"dataset-fashion-mnist)"
        ) from None


def dataset_for_trial(
    data: Mapping[str, Any], shipped: Any, device: torch.device | str, dtype: torch.dtype, seed: int = 0
):
    """The trial's dataset: the shipped one (an ``ObjectRef`` or a Dataset) cast to ``device`` and ``dtype``,
    or, for a generated dataset (``shipped`` None), made here from ``seed``.

    Args:
        data: the sweep's ``data`` section.
        shipped: what :func:`ship` returned (or the Dataset itself), or None.
        device, dtype: the trial's trainer device and float type.
        seed: the trial's seed (the teacher-student set depends on it).

    Returns:
        A :class:`trainers.Dataset` on ``device``.
    """
    from trainers import load_dataset

    if shipped is None:
        return load_dataset(
            data["dataset"],
            data.get("subset") or None,
            data.get("test_subset") or None,
            device=device,
            dtype=dtype,
            seed=seed,
        )
    ds = ray.get(shipped) if isinstance(shipped, ray.ObjectRef) else shipped
    return ds.to(device, dtype)
