"""Trainer step timings on the 784-1024-1024-10 tanh MLP, batch 128, float32, no biases.

Every figure is a ratio of times measured in the same run, interleaved, so that a noisy shared
machine moves numerator and denominator together. The JAX peers run in a process of their own
(:class:`PeerProcess`), taking turns with ours: in one process, torch's OpenMP threads and XLA's
thread pool spin-wait for work after each call and take the two cores from each other, which
slowed both sides by 10–40 % on a 2-vCPU EPYC (benchmarks/NOTES.md); a user's sweep never has
both in one process.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import time
from collections.abc import Callable

import jax_peer
import torch
from torch import nn

from trainers import TrainerConfig, make_trainer, tanh_pair
from trainers import _products as products

D_IN, WIDTH, D_OUT, BATCH = 784, 1024, 10, 128


# Pause after handing the cores from one process to the other, so that the thread pools of the
# side that just ran (OpenMP's spin-wait, XLA's) are asleep before the other side's clock starts.
HANDOFF_S = 0.02


def _peer_worker(conn, width: int, batch: int, include: tuple[str, ...]) -> None:
    """The JAX peers' process: builds its step functions, then times the calls it is sent, in order."""
    fns = peer_fns(width, batch, include)
    for fn in fns.values():
        fn(), fn()
    conn.send(sorted(fns))
    while (order := conn.recv()) is not None:
        out = []
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            out.append((k, time.perf_counter() - t0))
        conn.send(out)


def peer_fns(width: int, batch: int, include: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """The plain-JAX steps (BP, PC at T = 5 and 20, TP if ``include`` has ``tp``)."""
    fns = {"jax_bp": jax_peer.bp_step_fn(width, batch)}
    for t in (5, 20):
        fns[f"jax_pc_T{t}"] = jax_peer.pc_step_fn(width, batch, t)
    if "tp" in include:
        fns["jax_tp"] = jax_peer.tp_step_fn(width, batch)
    return fns


class PeerProcess:
    """The JAX peers in a spawned process of their own; :meth:`time` runs calls there and returns their times."""

    def __init__(self, width: int, batch: int, include: tuple[str, ...]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_peer_worker, args=(child, width, batch, include), daemon=True)
        self.proc.start()
        self.names: list[str] = self.conn.recv()

    def time(self, order: list[str]) -> list[tuple[str, float]]:
        self.conn.send(order)
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int = 5, reps: int = 10, peer: PeerProcess | None = None
) -> dict[str, float]:
    """Median seconds per call of each function (and of each of ``peer``'s) over ``rounds × reps``
    calls made round-robin.

    The functions take turns call by call, in a new random order each round (after two warm-up
    calls each), so a slow phase of a shared machine, which lasts about a second here, falls on
    all of them alike; timing a block of calls per function instead let a 180 ms and a 7 ms
    function see different phases. ``peer``'s functions run in their own process, one turn of
    all of them after each turn of ours (the side that goes first alternates), ``HANDOFF_S``
    apart; only one process computes at a time.
    """
    for fn in fns.values():
        fn(), fn()
    per: dict[str, list[float]] = {k: [] for k in [*fns, *(peer.names if peer else [])]}
    order, shuffle = list(fns), random.Random(0).shuffle
    peer_order = list(peer.names) if peer else []

    def ours() -> None:
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            per[k].append(time.perf_counter() - t0)

    def theirs() -> None:
        for k, dt in peer.time(peer_order):
            per[k].append(dt)

    for i in range(rounds * reps):
        shuffle(order)  # no function always follows the same one (a long step leaves the caches cold)
        shuffle(peer_order)
        turns = [ours] if peer is None else [ours, theirs] if i % 2 == 0 else [theirs, ours]
        for turn in turns:
            if peer is not None:
                time.sleep(HANDOFF_S)
            turn()
    return {k: statistics.median(v) for k, v in per.items()}


def _batch(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, D_IN, generator=g), torch.randint(0, D_OUT, (batch,), generator=g)


def _trainer_step(width: int, batch: int, **fields) -> Callable[[], object]:
    cfg = TrainerConfig(width=width, base_width=64, depth=3, lr=1e-3, device="cpu", **fields)
    tr = make_trainer(cfg, D_IN, D_OUT)
    x, y = _batch(batch)
    return lambda: tr.step(x, y)


def _old(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` on the path before issue 14: every product on torch's own dispatch (MKL)."""

    def call():
        with products.using("torch"):
            return fn()

    return call


def _old_bp_step(width: int, batch: int) -> Callable[[], object]:
    """Our BP μP trainer's step as it was before issue 14: autograd's backward (MKL), optimizer step."""
    cfg = TrainerConfig(
        algorithm="bp", parametrization="mup", width=width, base_width=64, depth=3, lr=1e-3, device="cpu"
    )
    tr = make_trainer(cfg, D_IN, D_OUT)
    x, y = _batch(batch)
    target = tr.targets(y)

    def step():
        tr.optimizer.zero_grad(set_to_none=True)
        loss = tr.loss_fn(tr.model(x), target)
        loss.backward()
        tr.optimizer.step()
        return float(loss.detach())

    return _old(step)


def _fast_plain_bp_step(width: int, batch: int) -> Callable[[], object]:
    """The fastest plain BP + SGD step we could write: explicit chain rule, every product on the
    fastest backend (``_products``), tanh as 2σ(2h) − 1 with φ' from it, SGD in place. No trainer."""
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(o, i, generator=g) / i**0.5 for i, o in ((D_IN, width), (width, width), (width, D_OUT))]
    x, y = _batch(batch)
    target = nn.functional.one_hot(y, D_OUT).float()
    lr = 1e-3

    @torch.no_grad()
    def step():
        a0, d0 = tanh_pair(products.linear(x, ws[0]))
        a1, d1 = tanh_pair(products.linear(a0, ws[1]))
        err = products.linear(a1, ws[2]).sub_(target)
        loss = 0.5 * float(err.pow(2).sum()) / batch
        e2 = err.div_(batch)
        e1 = products.matmul(e2, ws[2]).mul_(d1)
        e0 = products.matmul(e1, ws[1]).mul_(d0)
        for w, e, a in ((ws[2], e2, a1), (ws[1], e1, a0), (ws[0], e0, x)):
            w.sub_(products.outer(e, a), alpha=lr)
        return loss

    return step


def _plain_torch_step(width: int, batch: int) -> Callable[[], object]:
    """The reference: nn.Linear + nn.Tanh + torch.optim.SGD, the same MSE loss."""
    net = nn.Sequential(
        nn.Linear(D_IN, width, bias=False),
        nn.Tanh(),
        nn.Linear(width, width, bias=False),
        nn.Tanh(),
        nn.Linear(width, D_OUT, bias=False),
    )
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x, y = _batch(batch)
    target = nn.functional.one_hot(y, D_OUT).float()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * (net(x) - target).pow(2).sum() / batch
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _two_products(width: int, batch: int) -> Callable[[], object]:
    """The floor of one PC inference step: its two batch×width×width products (e W and φ Wᵀ), each on
    the fastest backend (``_products``; under :func:`_old`, on torch's own)."""
    a, e, w = torch.randn(batch, width), torch.randn(batch, width), torch.randn(width, width)
    return lambda: (products.matmul(e, w), products.linear(a, w))


def bench_trainers(
    rounds: int = 5,
    reps: int = 10,
    include: tuple[str, ...] = ("pc", "tp", "jax"),
    width: int = WIDTH,
    batch: int = BATCH,
) -> dict[str, float]:
    """Seconds per step of each variant (medians), measured interleaved (the JAX peers in a process of their own).

    ``include`` may add ``old``: the same steps on the path before issue 14 (``*_old``: every product
    on torch's own dispatch, BP through autograd), for the before/after table of benchmarks/NOTES.md.
    """
    fns: dict[str, Callable[[], object]] = {
        "bp_sp": _trainer_step(width, batch, algorithm="bp", parametrization="sp"),
        "bp_mup": _trainer_step(width, batch, algorithm="bp", parametrization="mup"),
        "plain_torch": _plain_torch_step(width, batch),
        "plain_bp_fast": _fast_plain_bp_step(width, batch),
        "two_products": _two_products(width, batch),
    }
    if "pc" in include:
        for t in (5, 20):
            fns[f"pc_T{t}"] = _trainer_step(width, batch, algorithm="pc", parametrization="mup", inference_steps=t)
    if "tp" in include:
        fns["tp"] = _trainer_step(width, batch, algorithm="tp", parametrization="mup")
    if "old" in include:
        fns["bp_mup_old"] = _old_bp_step(width, batch)
        fns["two_products_old"] = _old(_two_products(width, batch))
        for key in [k for k in ("pc_T5", "pc_T20", "tp") if k in fns]:
            fns[f"{key}_old"] = _old(
                _trainer_step(
                    width,
                    batch,
                    algorithm=key[:2],
                    parametrization="mup",
                    **({"inference_steps": int(key[4:])} if key != "tp" else {}),
                )
            )
    if "jax" not in include or not jax_peer.available():
        return interleaved(fns, rounds=rounds, reps=reps)
    peer = PeerProcess(width, batch, include)  # its own process: see the module's docstring
    try:
        return interleaved(fns, rounds=rounds, reps=reps, peer=peer)
    finally:
        peer.close()
