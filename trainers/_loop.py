"""A plain training loop: epochs of index-sliced minibatches, one history row per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from . import _products as products
from ._base import Trainer
from ._data import Dataset


def train(
    trainer: Trainer,
    data: Dataset,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    on_epoch: Callable[[dict], bool | None] | None = None,
) -> list[dict]:
    """Train ``trainer`` for ``epochs`` on ``data``; stop early at divergence.

    Args:
        trainer: any :class:`Trainer`.
        data: the dataset (moved to the trainer's device and dtype here).
        epochs: number of passes over the training set.
        batch_size: minibatch size (the last, partial batch is dropped).
        seed: seed of the shuffling.
        on_epoch: called with each history row; returning True stops training.

    Returns:
        One dict per epoch: ``epoch, train_loss, test_loss, test_acc, wall_s, sgd_steps, diverged``,
        ``matmul_backend`` (the product backends this run took so far, ``_products.used``);
        ``sgd_steps`` counts the updates applied since the start (a step reported diverged applies none).
    """
    data = data.to(trainer.device, trainer.dtype)
    gen = torch.Generator().manual_seed(int(seed))
    n = data.x_train.shape[0]
    batch_size = min(batch_size, n)
    history: list[dict] = []
    start = time.perf_counter()
    products.reset_used()
    steps = 0  # optimizer updates applied so far
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen).to(trainer.device)
        losses, diverged = [], False
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            stats = trainer.step(data.x_train[idx], data.y_train[idx])
            if stats["diverged"]:
                diverged = True
                break
            steps += 1
            losses.append(stats["loss"])
        train_loss = sum(losses) / len(losses) if losses and not diverged else math.inf
        if diverged:
            row = {
                "epoch": epoch,
                "train_loss": math.inf,
                "test_loss": math.inf,
                "test_acc": float("nan"),
                "wall_s": time.perf_counter() - start,
                "diverged": True,
            }
        else:
            ev = trainer.evaluate(data.x_test, data.y_test)
            bad = not math.isfinite(ev["loss"]) or ev["loss"] > trainer.cfg.diverge_loss
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "test_loss": ev["loss"],
                "test_acc": ev.get("accuracy", float("nan")),
                "wall_s": time.perf_counter() - start,
                "diverged": bad,
            }
        row["sgd_steps"] = steps
        row["matmul_backend"] = products.used()
        history.append(row)
        stop = on_epoch(row) if on_epoch is not None else False
        if row["diverged"] or stop:
            break
    return history
