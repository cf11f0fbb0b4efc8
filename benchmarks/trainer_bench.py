"""Trainer step timings on the 784-1024-1024-10 tanh MLP, batch 128, float32, no biases.

Every figure is a ratio of times measured in the same process, interleaved, so
that a noisy shared machine moves numerator and denominator together.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch
from torch import nn

import jax_peer
from trainers import TrainerConfig, make_trainer

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
    cfg = TrainerConfig(width=width, base_width=64, depth=3, lr=1e-3, **fields)
    tr = make_trainer(cfg, D_IN, D_OUT)
    x, y = _batch(batch)
    return lambda: tr.step(x, y)


def _plain_torch_step(width: int, batch: int) -> Callable[[], object]:
    """The reference: nn.Linear + nn.Tanh + torch.optim.SGD, the same MSE loss."""
    net = nn.Sequential(nn.Linear(D_IN, width, bias=False), nn.Tanh(), nn.Linear(width, width, bias=False),
                        nn.Tanh(), nn.Linear(width, D_OUT, bias=False))
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
    """The floor of one PC inference step: two batch×width×width matrix products."""
    a, w1, w2 = torch.randn(batch, width), torch.randn(width, width), torch.randn(width, width)
    return lambda: (a @ w1, a @ w2)


def bench_trainers(rounds: int = 5, reps: int = 10, include: tuple[str, ...] = ("pc", "tp", "jax"),
                   width: int = WIDTH, batch: int = BATCH) -> dict[str, float]:
    """Seconds per step of each variant (medians), measured interleaved in this process."""
    fns: dict[str, Callable[[], object]] = {
        "bp_sp": _trainer_step(width, batch, algorithm="bp", parametrization="sp"),
        "bp_mup": _trainer_step(width, batch, algorithm="bp", parametrization="mup"),
        "plain_torch": _plain_torch_step(width, batch),
        "two_products": _two_products(width, batch),
    }
    if "pc" in include:
        for t in (5, 20):
            fns[f"pc_T{t}"] = _trainer_step(width, batch, algorithm="pc", parametrization="mup", inference_steps=t)
    if "tp" in include:
        fns["tp"] = _trainer_step(width, batch, algorithm="tp", parametrization="mup")
    if "jax" in include and jax_peer.available():
        for t in (5, 20):
            fns[f"jax_pc_T{t}"] = jax_peer.pc_step_fn(width, batch, t)
    return interleaved(fns, rounds=rounds, reps=reps)
