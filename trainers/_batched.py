"""Train a pack of trials of one shape as one batched model (``train_batched``), or say it cannot.

A sweep's trials at one width differ often only in learning rate and seed. :func:`train_batched`
trains such a pack together (``trainers._stacked``: weights stacked on a member axis, batched
matmuls) and returns, per member, the history rows that ``trainers.train`` would have returned for
it alone, to fp32 rounding:

- each member is initialised by its own ordinary trainer (``torch.manual_seed(seed)`` and
  ``make_trainer``, as the orchestrator builds a trial), and draws its minibatch order from its own
  ``torch.Generator`` seeded with its seed, as ``train`` does: members see different minibatches;
- a member whose step loss is non-finite or above ``diverge_loss`` (for PC also a non-finite
  update; for TP a non-finite feedback loss or update) is taken out of the pack before its update:
  its rows end at that epoch with ``diverged`` as in ``train``, and no NaN of it reaches the others
  (the pack's tensors are re-indexed without it; TP's feedback steps run before that check, on the
  member's own slices only). A member whose test loss diverges, or whose ``on_epoch`` returns True,
  leaves after that epoch's row;
- ``wall_s`` is the member's share of the pack's wall time: every interval (a step, an evaluation)
  is divided equally among the members that took part in it, and ``wall_s`` is the sum of its
  shares up to the row. Over the members of a pack the last ``wall_s`` add up to the pack's wall time.
  The loop synchronises with the device once per step (the step losses, which ``train`` reads too).

:func:`batchable` says whether a list of configs can take this path: BP, PC or TP (the built-in
trainers; TP with trained feedback, ``linear`` or ``tanh``), ``model="mlp"``, every field equal
except ``lr`` and ``seed``. Other packs run member
by member (``trainers.train``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from . import _products as products
from ._base import TRAINERS, make_trainer
from ._config import TrainerConfig
from ._data import Dataset
from ._stacked import STACKED, StackedBP, StackedPC, StackedTP, member_finite

EVAL_FLOATS = 1 << 24  # largest activation of a test chunk, in floats (4096 rows when it fits)


def batchable(configs: list[TrainerConfig]) -> bool:
    """True if ``configs`` can train as one batched model: a built-in BP, PC or TP trainer (TP with
    trained feedback), an MLP, and every field equal but ``lr`` and ``seed``."""
    if not configs:
        return False
    first = configs[0]
    if any(c.replace(lr=first.lr, seed=first.seed) != first for c in configs[1:]):
        return False
    stacked = STACKED.get(TRAINERS.get(first.algorithm))
    return stacked is not None and first.model == "mlp" and stacked.supports(first)


class _Pack:
    """The stacked trainer of the members still training, its optimizer, and which member is in each slot."""

    def __init__(self, configs: list[TrainerConfig], input_dim: int, output_dim: int) -> None:
        members = []
        for cfg in configs:  # each member as the orchestrator builds a trial: its seed, then its trainer
            torch.manual_seed(cfg.seed)
            members.append(make_trainer(cfg, input_dim, output_dim))
        self.trainer = STACKED[type(members[0])](configs[0], input_dim, output_dim)
        self.trainer.adopt(members)
        self.members = list(range(len(configs)))  # slot -> index into configs
        self.diverge_loss = float(configs[0].diverge_loss)

    def healthy(self, losses: list[float]) -> list[bool]:
        """Per slot: the step loss is finite and not above ``diverge_loss`` (``Trainer._is_diverged``)."""
        return [math.isfinite(v) and v <= self.diverge_loss for v in losses]

    def keep(self, ok: list[bool]) -> torch.Tensor | None:
        """Drop the slots whose ``ok`` is False; the kept slots' indices (None when all stay)."""
        if all(ok):
            return None
        keep = torch.tensor([i for i, good in enumerate(ok) if good], dtype=torch.long, device=self.trainer.device)
        self.members = [m for m, good in zip(self.members, ok) if good]
        if self.members:
            self.trainer.select(keep)
        return keep


def _bp_step(pack: _Pack, x: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[bool]]:
    """BPTrainer.step for every slot: the loss, then (healthy slots only) the update inside the backward pass."""
    tr = pack.trainer
    hs, pairs, inputs = tr._forward(x)
    losses = tr.loss_fn(hs[-1], target).tolist()
    ok = pack.healthy(losses)
    keep = pack.keep(ok)
    if keep is not None:
        if not pack.members:
            return losses, ok
        hs, inputs, target = [h[keep] for h in hs], [a[keep] for a in inputs], target[keep]
        pairs = [tuple(t[keep] for t in pair) for pair in pairs]
    params, opt = dict(tr.model.named_parameters()), tr.stacked_optimizer
    opt.begin_step()
    tr._backward(hs, pairs, inputs, target, lambda name, grad: opt.descend(name, params[name], grad))
    return losses, ok


def _pc_step(pack: _Pack, x: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[bool]]:
    """Trainer.step for PC, every slot: inference, the energy gradient, then the healthy slots' update."""
    tr = pack.trainer
    state = tr.infer(x, target)
    grads = tr.energy_gradient(state)
    losses = state["loss"].tolist()
    ok = [good and finite for good, finite in zip(pack.healthy(losses), member_finite(grads.values()).tolist())]
    keep = pack.keep(ok)
    if keep is not None:
        grads = {n: g[keep] for n, g in grads.items()}
    if pack.members:
        tr.descend(grads)
    return losses, ok


def _tp_step(pack: _Pack, x: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[bool]]:
    """TPTrainer.step for every slot: the loss; (healthy slots) the feedback, then the forward update of
    the slots whose feedback loss and gradients are finite."""
    tr = pack.trainer
    hs = tr.model.preactivations(x)
    losses = tr.loss_fn(hs[-1], target).tolist()
    ok = pack.healthy(losses)
    keep = pack.keep(ok)
    if keep is not None:
        if not pack.members:
            return losses, ok
        hs, x, target = [h[keep] for h in hs], x[keep], target[keep]
    fb = tr.update_feedback(x, hs)
    grads = tr._local_gradients(x, hs, tr._deltas(hs, target))
    good = (fb["feedback_finite"] & torch.isfinite(fb["feedback_loss"]) & member_finite(grads.values())).tolist()
    after = iter(good)
    ok = [healthy and next(after) for healthy in ok]  # the slots that passed the loss check, in order
    keep = pack.keep(good)
    if keep is not None:
        grads = {n: g[keep] for n, g in grads.items()}
    if pack.members:
        tr.descend(grads)
    return losses, ok


STEPS = {StackedBP: _bp_step, StackedPC: _pc_step, StackedTP: _tp_step}


def _evaluate(pack: _Pack, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Trainer.evaluate for every slot on one shared test set: (losses, accuracies; NaN for regression)."""
    tr, M = pack.trainer, len(pack.members)
    chunk = max(1, min(4096, EVAL_FLOATS // (M * max(tr.model.dims))))
    n, sums, correct = x.shape[0], [], torch.zeros(M, dtype=torch.long, device=x.device)
    for i in range(0, n, chunk):
        xb, yb = x[i : i + chunk], y[i : i + chunk]
        out = tr.model(xb)  # M × b × C
        target = tr.targets(yb)
        sums.append(tr.loss_fn(out, target.expand(M, *target.shape)) * xb.shape[0])
        if not yb.dtype.is_floating_point:
            correct += (out.argmax(-1) == yb).sum(1)
    per_chunk = torch.stack(sums).tolist()  # chunks × M, one sync
    losses = [sum(row[j] for row in per_chunk) / n for j in range(M)]
    if y.dtype.is_floating_point:
        return losses, [float("nan")] * M
    return losses, [c / n for c in correct.tolist()]


def train_batched(
    configs: list[TrainerConfig],
    data: Dataset,
    epochs: int,
    batch_size: int = 128,
    on_epoch: Callable[[int, dict], bool | None] | None = None,
) -> list[list[dict]]:
    """Train the members ``configs`` as one batched model (see the module's docstring).

    Args:
        configs: the members; :func:`batchable` must hold (ValueError otherwise).
        data: the dataset (moved to the members' device and dtype here).
        epochs: passes over the training set.
        batch_size: minibatch size (the last, partial batch is dropped), every member's.
        on_epoch: called with (member index, its history row) after each epoch of each member still
            training; returning True stops that member.

    Returns:
        Per member (in the order of ``configs``), the rows ``trainers.train`` returns: ``epoch,
        train_loss, test_loss, test_acc, wall_s, diverged, sgd_steps, matmul_backend``; ``wall_s``
        is the member's share of the pack's time.
    """
    if not batchable(configs):
        raise ValueError("train_batched: the configs differ in more than lr and seed, or no stacked trainer fits")
    pack = _Pack(configs, data.input_dim, data.output_dim)
    tr = pack.trainer
    step = STEPS[type(tr)]
    data = data.to(tr.device, tr.dtype)
    gens = [torch.Generator().manual_seed(int(c.seed)) for c in configs]
    n = data.x_train.shape[0]
    batch_size = min(batch_size, n)
    histories: list[list[dict]] = [[] for _ in configs]
    sgd_steps, wall = [0] * len(configs), [0.0] * len(configs)
    products.reset_used()
    products.note_used("torch")  # the batched matmuls are torch's own
    clock = [time.perf_counter()]

    def charge(members: list[int]) -> None:
        now = time.perf_counter()
        for m in members:
            wall[m] += (now - clock[0]) / len(members)
        clock[0] = now

    with torch.no_grad():
        for epoch in range(1, epochs + 1):
            if not pack.members:
                break
            orders = torch.stack([torch.randperm(n, generator=gens[m]) for m in pack.members]).to(tr.device)
            losses: dict[int, list[float]] = {m: [] for m in pack.members}
            diverged: list[int] = []
            for i in range(0, n - batch_size + 1, batch_size):
                idx, before = orders[:, i : i + batch_size], list(pack.members)
                values, ok = step(pack, data.x_train[idx], tr.targets(data.y_train[idx]))
                charge(before)
                for m, value, good in zip(before, values, ok):
                    if good:
                        losses[m].append(value)
                        sgd_steps[m] += 1
                    else:
                        diverged.append(m)
                if not pack.members:
                    break
                if not all(ok):
                    orders = orders[[j for j, good in enumerate(ok) if good]]
            rows = {
                m: {
                    "epoch": epoch,
                    "train_loss": math.inf,
                    "test_loss": math.inf,
                    "test_acc": float("nan"),
                    "wall_s": wall[m],
                    "diverged": True,
                }
                for m in diverged
            }
            if pack.members:
                test_losses, accs = _evaluate(pack, data.x_test, data.y_test)
                charge(pack.members)
                for m, test_loss, acc in zip(pack.members, test_losses, accs):
                    rows[m] = {
                        "epoch": epoch,
                        "train_loss": sum(losses[m]) / len(losses[m]),
                        "test_loss": test_loss,
                        "test_acc": acc,
                        "wall_s": wall[m],
                        "diverged": not math.isfinite(test_loss) or test_loss > pack.diverge_loss,
                    }
            stopped = set()
            for m in sorted(rows):
                row = rows[m]
                row["sgd_steps"] = sgd_steps[m]
                row["matmul_backend"] = products.used()
                histories[m].append(row)
                stop = on_epoch(m, row) if on_epoch is not None else False
                if row["diverged"] or stop:
                    stopped.add(m)
            pack.keep([m not in stopped for m in pack.members])
    return histories
