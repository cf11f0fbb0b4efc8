"""Trainer: the library API shared by BP, PC and TP (step, evaluate, update_direction)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.optim.sgd import sgd

from ._config import TrainerConfig
from ._model import init_net, make_model
from ._param import Table, resolve_table
from ._registry import TRAINERS, register_trainer  # noqa: F401  (re-exported)


def all_finite(tensors) -> bool:
    """True if no entry of any tensor is NaN or ±inf: one reduction pass per tensor, one host sync.

    A NaN or inf entry makes the tensor's sum NaN or inf (inf − inf = NaN), so the sum of sums is
    finite exactly when every entry is finite, unless finite entries add up past the float range,
    which an update or loss of a healthy run never does.
    """
    total = None
    for t in tensors:
        total = t.sum() if total is None else total + t.sum()
    return total is None or bool(torch.isfinite(total))


def make_trainer(cfg: TrainerConfig, input_dim: int, output_dim: int, **kw) -> Trainer:
    """Build the trainer of ``cfg.algorithm`` for a d → C problem (``kw``: e.g. ``table=`` for BP)."""
    if cfg.algorithm not in TRAINERS:
        raise ValueError(f"algorithm={cfg.algorithm!r} has no trainer; valid: {', '.join(TRAINERS)}")
    return TRAINERS[cfg.algorithm](cfg, input_dim, output_dim, **kw)


class Trainer:
    """Base class. Subclasses implement :meth:`_gradient` (and may override :meth:`step`).

    ``model`` is the feedforward network; its weights are ``layers.{l}.weight``.
    Each parameter p has a learning rate η · m^{lr exponent of its role}
    (``lr_multipliers``); ``update_direction`` is given before those. Internally a
    trainer computes the quantity its optimizer descends, g = −direction (BP: ∂loss/∂θ;
    PC: ∂F/∂θ at the relaxed activities; TP: ∂(local loss)/∂θ), so a step never negates.
    """

    def __init__(self, cfg: TrainerConfig, input_dim: int, output_dim: int, table: Table | None = None) -> None:
        self.cfg = cfg
        self.device = cfg.torch_device
        self.dtype = cfg.torch_dtype
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.table: Table = resolve_table(cfg) if table is None else table  # table=: a control outside the registry
        m = cfg.width_mult
        self.model = make_model(cfg.model, input_dim, output_dim, cfg.width, cfg.depth, cfg.activation, cfg.bias)
        init_net(self.model, self.table, m, cfg.seed)
        self.model.to(device=self.device, dtype=self.dtype)
        self.lr_multipliers: dict[str, float] = {}
        for idx, (layer, layer_role) in enumerate(zip(self.model.layers, self.model.roles)):
            for pname, _ in layer.named_parameters():  # a bias has its role's bias_lr (Tensor Programs V)
                e = self.table.bias_lr(layer_role) if pname == "bias" else self.table.rule(layer_role).lr
                self.lr_multipliers[f"layers.{idx}.{pname}"] = float(m**e)
        self.optimizer = self._make_optimizer(self.model.named_parameters(), self.lr_multipliers, cfg.lr)

    # ---- helpers -------------------------------------------------------
    def _make_optimizer(self, named_params, multipliers: dict[str, float], lr: float):
        """SGD or Adam with one group per parameter (its own lr)."""
        groups = [{"params": [p], "lr": lr * multipliers[n], "name": n} for n, p in named_params]
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Regression targets: one-hot for integer labels under MSE, the labels for CE."""
        y = y.to(self.device)
        if y.dtype in (torch.int64, torch.int32, torch.uint8):
            if self.cfg.loss == "ce":
                return y.long()
            return F.one_hot(y.long(), self.output_dim).to(self.dtype)
        if self.cfg.loss == "ce":
            raise ValueError("loss='ce' needs integer class labels")
        return y.to(self.dtype)

    def loss_fn(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch-mean loss: 0.5·||f − y||² (MSE) or cross-entropy."""
        if self.cfg.loss == "ce":
            return F.cross_entropy(out, target)
        return 0.5 * (out - target).pow(2).sum() / out.shape[0]

    def loss_grad(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """∂loss/∂f for the batch-mean loss (rows are per-sample, divided by the batch size)."""
        if self.cfg.loss == "ce":
            return (torch.softmax(out, dim=1) - F.one_hot(target, out.shape[1]).to(out.dtype)) / out.shape[0]
        return (out - target) / out.shape[0]

    def _is_diverged(self, loss: float) -> bool:
        return not math.isfinite(loss) or loss > self.cfg.diverge_loss

    # ---- API -----------------------------------------------------------
    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """(g = −update direction per parameter, what the optimizer descends; stats with at least ``loss``)."""
        raise NotImplementedError

    def update_direction(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The update this algorithm would make on (x, y), before learning rates; not applied."""
        x = x.to(device=self.device, dtype=self.dtype)
        grads, _ = self._gradient(x, self.targets(y))
        return {n: g.neg_() for n, g in grads.items()}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One training step. Returns ``{"loss": float, "diverged": bool, ...}``.

        A non-finite or too large loss (or non-finite update) is reported as
        ``diverged=True`` and the weights are left untouched.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        grads, stats = self._gradient(x, self.targets(y))
        loss = float(stats["loss"])
        finite = not self._is_diverged(loss) and all_finite(grads.values())
        stats = {k: (float(v) if torch.is_tensor(v) else v) for k, v in stats.items()}
        stats["loss"] = loss
        stats["diverged"] = not finite
        if finite:
            self._apply(grads)
        return stats

    def _apply(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step descending ``grads`` (g = −direction, per parameter name)."""
        for name, p in self.model.named_parameters():
            p.grad = grads[name]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _sgd_now(self) -> Callable[[str, torch.Tensor], None] | None:
        """For plain SGD (no momentum): a function that descends one parameter's gradient at once, by
        torch.optim's functional SGD with that parameter's group (its lr), so that a trainer can update
        a layer while its gradient is still in cache; None for Adam or momentum, whose state lives in
        the optimizer. The same update as :meth:`_apply` (``torch.optim.SGD.step`` runs this function
        per group).
        """
        groups = {g["name"]: g for g in self.optimizer.param_groups}
        if not isinstance(self.optimizer, torch.optim.SGD) or any(g["momentum"] for g in groups.values()):
            return None

        def descend(name: str, grad: torch.Tensor) -> None:
            g = groups[name]
            sgd(
                g["params"],
                [grad],
                [None],
                weight_decay=g["weight_decay"],
                momentum=0.0,
                lr=g["lr"],
                dampening=g["dampening"],
                nesterov=g["nesterov"],
                maximize=g["maximize"],
            )

        return descend

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> dict:
        """Feedforward loss (and accuracy for class labels) on (x, y)."""
        total, correct, n = 0.0, 0, x.shape[0]
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size].to(device=self.device, dtype=self.dtype)
            yb = y[i : i + batch_size]
            out = self.model(xb)
            total += float(self.loss_fn(out, self.targets(yb))) * xb.shape[0]
            if not yb.dtype.is_floating_point:
                correct += int((out.argmax(1).cpu() == yb.cpu()).sum())
        stats = {"loss": total / n}
        if not y.dtype.is_floating_point:
            stats["accuracy"] = correct / n
        return stats
