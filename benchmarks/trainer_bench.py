"""Trainer step timings on the 784-1024-1024-10 tanh MLP, batch 128, float32, no biases.

Every figure is a ratio of times measured in the same process, interleaved, so
that a noisy shared machine moves numerator and denominator together.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import jax_peer
import torch
from torch import nn

from trainers import TrainerConfig, make_trainer
from trainers import _products as products
from trainers._pc import _tanh_pair

D_IN, WIDTH, D_OUT, BATCH = 784, 1024, 10, 128


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 5, reps: int = 10) -> dict[str, float]:
    """Median seconds per call of each function over ``rounds × reps`` calls made round-robin.

    The functions take turns call by call, in a new random order each round (after two warm-up
    calls each), so a slow phase of a shared machine, which lasts about a second here, falls on
    all of them alike; timing a block of calls per function instead let a 180 ms and a 7 ms
    function see different phases.
    """
    for fn in fns.values():
        fn(), fn()
    per: dict[str, list[float]] = {k: [] for k in fns}
    order, shuffle = list(fns), random.Random(0).shuffle
    for _ in range(rounds * reps):
        shuffle(order)  # no function always follows the same one (a long step leaves the caches cold)
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            per[k].append(time.perf_counter() - t0)
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
        a0, d0 = _tanh_pair(products.linear(x, ws[0]))
        a1, d1 = _tanh_pair(products.linear(a0, ws[1]))
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
    """Seconds per step of each variant (medians), measured interleaved in this process.

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
    if "jax" in include and jax_peer.available():
        fns["jax_bp"] = jax_peer.bp_step_fn(width, batch)
        for t in (5, 20):
            fns[f"jax_pc_T{t}"] = jax_peer.pc_step_fn(width, batch, t)
        if "tp" in include:
            fns["jax_tp"] = jax_peer.tp_step_fn(width, batch)
    return interleaved(fns, rounds=rounds, reps=reps)
