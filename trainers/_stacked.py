"""M trainers of one shape as one: weights stacked on a leading member axis, products batched.

A pack of trials that differ only in learning rate and seed (one width, one algorithm, one
parametrization) trains as one model whose ``layers.{l}.weight`` is ``M × out × in``; every
activation is ``M × B × n`` and every product a batched matmul (``torch.bmm``/``baddbmm``), so a
GPU (or a CPU at small widths) sees M times more work per call.

The math is not written again: :class:`StackedDense` has ``Dense``'s interface (``forward``,
``transpose``, ``residual``, ``weight_grad``, ``bias_grad``) on stacked weights, and the batched
trainers are the ordinary ``BPTrainer``/``PCTrainer`` whose ``model`` is a :class:`StackedMLP`,
with only the few methods that reduce over the batch axis made per member (:class:`_PerMember`).
Each member's initial weights come from its own ordinary trainer (its seed, its table), and its
learning rates from that trainer's optimizer groups, so the parametrization tables are read in
one place. The optimizers (:class:`StackedOptimizer`) are torch.optim's SGD and Adam updates,
written for a learning rate per member.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Trainer
from ._bp import BPTrainer
from ._layers import Dense
from ._model import MLP, Net
from ._pc import PCTrainer


def _member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An ``M``-vector shaped to broadcast against a stacked tensor ``like`` (``M × ...``)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class StackedDense(nn.Module):
    """M ``Dense`` layers of one shape: ``weight`` is ``M × out × in``, ``bias`` ``M × out``.

    Inputs are ``M × B × in`` (each member its own batch); ``forward`` also takes a 2-d ``B × in``
    batch shared by every member (evaluation on the test set), computed as one broadcast matmul.
    """

    def __init__(self, layers: list[Dense]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([la.weight.detach() for la in layers]), requires_grad=False)
        has_bias = layers[0].bias is not None
        self.bias = (
            nn.Parameter(torch.stack([la.bias.detach() for la in layers]), requires_grad=False) if has_bias else None
        )

    @property
    def fan_in(self) -> int:
        return self.weight.shape[2]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.dim() == 2:  # one batch for all members
            out = torch.matmul(a, self.weight.mT)
            return out.add_(self.bias.unsqueeze(1)) if self.bias is not None else out
        if self.bias is not None:
            return torch.baddbmm(self.bias.unsqueeze(1), a, self.weight.mT)
        return torch.bmm(a, self.weight.mT)

    def transpose(self, e: torch.Tensor, weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """e W per member, shaped like the input (``weight``: W or any tensor shaped like it)."""
        return torch.bmm(e, weight).view(shape)

    def residual(self, x: torch.Tensor, a: torch.Tensor, alpha: float) -> torch.Tensor:
        """x − α·forward(a), the subtraction inside the batched GEMM."""
        r = torch.baddbmm(x, a, self.weight.mT, alpha=-alpha)
        return r.sub_(self.bias.unsqueeze(1), alpha=alpha) if self.bias is not None else r

    def weight_grad(self, e: torch.Tensor, a: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """scale · eᵀ a per member: ``M × out × in``."""
        g = torch.bmm(e.mT, a)
        return g.mul_(scale) if scale != 1.0 else g

    @staticmethod
    def bias_grad(e: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        g = e.sum(1)
        return g.mul_(scale) if scale != 1.0 else g

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members ``keep`` (indices), in that order."""
        self.weight = nn.Parameter(self.weight[keep], requires_grad=False)
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias[keep], requires_grad=False)


class StackedMLP(Net):
    """M MLPs of one shape and one parametrization (equal multipliers α_l) as one network."""

    def __init__(self, models: list[Net]) -> None:
        first = models[0]
        if not all(isinstance(m, MLP) for m in models):
            raise ValueError("only MLPs stack (model='mlp')")
        if any(m.dims != first.dims or m.multipliers != first.multipliers for m in models):
            raise ValueError("stacked MLPs need equal shapes and multipliers (one width, one parametrization)")
        super().__init__(first.activation)
        self.dims = list(first.dims)
        self._finish([StackedDense([m.layers[i] for m in models]) for i in range(first.depth)])
        self.multipliers = list(first.multipliers)

    @property
    def members(self) -> int:
        return self.layers[0].weight.shape[0]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members ``keep`` (indices), in that order."""
        for layer in self.layers:
            layer.select(keep)


class StackedOptimizer:
    """torch.optim's SGD (no momentum) or Adam on stacked parameters, a learning rate per member.

    ``lrs[name]`` is the ``M``-vector of that parameter's learning rates, read from the members'
    own optimizer groups (η_member · m^e of the table); Adam's betas and eps from their defaults.
    The updates are those of ``torch.optim.sgd``/``adam`` (single-tensor), up to fp32 rounding.
    """

    def __init__(self, trainers: list[Trainer], device: torch.device, dtype: torch.dtype) -> None:
        opt = trainers[0].optimizer
        self.adam = isinstance(opt, torch.optim.Adam)
        if not self.adam and not (isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0):
            raise ValueError(f"no stacked optimizer for {type(opt).__name__}")
        if any(g["weight_decay"] for g in opt.param_groups):
            raise ValueError("no stacked optimizer with weight decay")
        self.betas, self.eps = opt.defaults.get("betas", (0.9, 0.999)), opt.defaults.get("eps", 1e-8)
        groups = [{g["name"]: g["lr"] for g in t.optimizer.param_groups} for t in trainers]
        self.lrs = {n: torch.tensor([g[n] for g in groups], device=device, dtype=dtype) for n in groups[0]}
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = 0  # Adam's step count (every member steps together)

    def begin_step(self) -> None:
        """Call once per optimizer step, before its :meth:`descend` calls."""
        self.steps += 1

    def descend(self, name: str, p: torch.Tensor, grad: torch.Tensor) -> None:
        """Update stacked parameter ``p`` in place along −``grad`` (consumed)."""
        lr = _member_view(self.lrs[name], p)
        if not self.adam:
            p.sub_(grad.mul_(lr))
            return
        beta1, beta2 = self.betas
        if name not in self.state:
            self.state[name] = (torch.zeros_like(p), torch.zeros_like(p))
        exp_avg, exp_avg_sq = self.state[name]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        p.sub_(exp_avg.div(denom).mul_(step_size))

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members ``keep`` (indices), in that order."""
        self.lrs = {n: v[keep] for n, v in self.lrs.items()}
        self.state = {n: (a[keep], b[keep]) for n, (a, b) in self.state.items()}


class _PerMember:
    """Trainer methods that reduce over the batch, per member: ``M × B × C`` in, an ``M``-vector out."""

    def loss_fn(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        M, B, C = out.shape
        if self.cfg.loss == "ce":
            return F.cross_entropy(out.reshape(M * B, C), target.reshape(M * B), reduction="none").view(M, B).mean(1)
        return 0.5 * (out - target).pow(2).sum((1, 2)) / B

    def loss_grad(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        B = out.shape[1]
        if self.cfg.loss == "ce":
            return (torch.softmax(out, dim=-1) - F.one_hot(target, out.shape[-1]).to(out.dtype)) / B
        return (out - target) / B


class StackedBP(_PerMember, BPTrainer):
    """BP on a :class:`StackedMLP` (its ``_forward``/``_backward`` unchanged)."""


class StackedPC(_PerMember, PCTrainer):
    """PC on a :class:`StackedMLP` (its inference and ``energy_gradient`` unchanged)."""

    @staticmethod
    def _samples(inputs: torch.Tensor) -> int:
        return inputs.shape[1]

    def _energy(self, errs: list[torch.Tensor], mu_L: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        B = mu_L.shape[1]
        hidden = sum(g * e.pow(2).sum((1, 2)) for g, e in zip(self.gammas[:-1], errs[:-1])) / (2 * B)
        return hidden + self.gammas[-1] * self.loss_fn(mu_L, target)


# the registered trainer class -> its stacked twin
STACKED: dict[type, type] = {BPTrainer: StackedBP, PCTrainer: StackedPC}


def member_finite(tensors) -> torch.Tensor:
    """Per member (leading axis): True where no entry of any tensor is NaN or ±inf (one sum each)."""
    total = None
    for t in tensors:
        s = t.sum(tuple(range(1, t.dim()))) if t.dim() > 1 else t
        total = s if total is None else total + s
    return torch.isfinite(total)
