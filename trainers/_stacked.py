"""M trainers of one shape as one: weights stacked on a leading member axis, products batched.

A pack of trials that differ only in learning rate and seed (one width, one algorithm, one
parametrization) trains as one model whose ``layers.{l}.weight`` is ``M × out × in``; every
activation is ``M × B × n`` and every product a batched matmul (``torch.bmm``/``baddbmm``), so a
GPU (or a CPU at small widths) sees M times more work per call.

The math is not written again: :class:`StackedDense` has ``Dense``'s interface (``forward``,
``transpose``, ``residual``, ``weight_grad``, ``bias_grad``) on stacked weights, and the batched
trainers are the ordinary ``BPTrainer``/``PCTrainer``/``TPTrainer`` whose ``model`` is a
:class:`StackedMLP`, with only the few methods that reduce over the batch axis made per member
(:class:`_PerMember`; TP's feedback training too, :class:`StackedTP`).
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
from ._config import TrainerConfig
from ._layers import Dense
from ._model import MLP, Net
from ._pc import PCTrainer
from ._tp import TPTrainer
from ._tp_feedback import REGRESSION_KINDS, apply_feedback


def _member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An ``M``-vector shaped to broadcast against a stacked tensor ``like`` (``M × ...``)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def member_finite(tensors) -> torch.Tensor:
    """Per member (leading axis): True where no entry of any tensor is NaN or ±inf (one sum each)."""
    total = None
    for t in tensors:
        s = t.sum(tuple(range(1, t.dim()))) if t.dim() > 1 else t
        total = s if total is None else total + s
    return torch.isfinite(total)


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

    def __init__(self, optimizers: list[torch.optim.Optimizer], device: torch.device, dtype: torch.dtype) -> None:
        opt = optimizers[0]
        self.adam = isinstance(opt, torch.optim.Adam)
        if not self.adam and not (isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0):
            raise ValueError(f"no stacked optimizer for {type(opt).__name__}")
        if any(g["weight_decay"] for g in opt.param_groups):
            raise ValueError("no stacked optimizer with weight decay")
        self.betas, self.eps = opt.defaults.get("betas", (0.9, 0.999)), opt.defaults.get("eps", 1e-8)
        groups = [{g["name"]: g["lr"] for g in o.param_groups} for o in optimizers]
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
    """What a stacked trainer adds to its algorithm's trainer: the members' weights and optimizer
    (:meth:`adopt`), dropping members (:meth:`select`), and the methods that reduce over the batch
    made per member (``M × B × C`` in, an ``M``-vector out)."""

    @staticmethod
    def supports(cfg: TrainerConfig) -> bool:
        """Whether members of this config can stack (beyond ``model="mlp"``)."""
        return True

    def adopt(self, members: list[Trainer]) -> None:
        """Take the members' initial weights (stacked) and their learning rates."""
        self.model = StackedMLP([t.model for t in members])
        self.stacked_optimizer = StackedOptimizer([t.optimizer for t in members], self.device, self.dtype)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members ``keep`` (indices), in that order."""
        self.model.select(keep)
        self.stacked_optimizer.select(keep)

    def descend(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step of the stacked weights along −``grads`` (every member's)."""
        opt = self.stacked_optimizer
        opt.begin_step()
        for name, p in self.model.named_parameters():
            opt.descend(name, p, grads[name])

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


class _StackedWeights(nn.Module):
    """M weights of one shape, ``weight`` ``M × ...`` (TP's feedback maps Q_k)."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([w.detach() for w in weights]), requires_grad=False)

    def select(self, keep: torch.Tensor) -> None:
        self.weight = nn.Parameter(self.weight[keep], requires_grad=False)


class StackedTP(_PerMember, TPTrainer):
    """TP on a :class:`StackedMLP` with trained feedback (``linear``/``tanh``): the feedback maps
    stacked too, each member's noise from its own generator (``noise_gen`` is their list, which
    ``_tp_feedback``'s samplers accept), targets and local gradients unchanged."""

    @staticmethod
    def supports(cfg: TrainerConfig) -> bool:
        return cfg.feedback not in REGRESSION_KINDS  # the closed-form ridge solution is not stacked

    def adopt(self, members: list[Trainer]) -> None:
        super().adopt(members)
        self.feedback = nn.ModuleDict(
            {n: _StackedWeights([t.feedback[n].weight for t in members]) for n in self.feedback}
        )
        self.noise_gen = [t.noise_gen for t in members]
        self.stacked_feedback_optimizer = StackedOptimizer(
            [t.feedback_optimizer for t in members], self.device, self.dtype
        )

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        for fb in self.feedback.values():
            fb.select(keep)
        self.stacked_feedback_optimizer.select(keep)
        self.noise_gen = [self.noise_gen[i] for i in keep.tolist()]

    @torch.no_grad()
    def update_feedback(self, x: torch.Tensor, hs: list[torch.Tensor] | None = None) -> dict:
        """``TPTrainer._train_feedback`` per member: ``feedback_loss`` (first draw) and ``feedback_finite``
        are ``M``-vectors. A member whose gradient is not finite keeps stepping (only its own slice:
        it has diverged and leaves the pack)."""
        if hs is None:
            hs = self.model.preactivations(x.to(device=self.device, dtype=self.dtype))
        opt, first_loss, finite = self.stacked_feedback_optimizer, None, None
        for _ in range(self.cfg.feedback_steps):
            losses, grads = 0.0, {}
            for k, (name, (u, e)) in enumerate(self._draw(hs).items(), start=1):
                layer, s = self.model.layers[k], u.shape[1]
                r = apply_feedback(layer, self.feedback[name].weight, u, e.shape) - e
                losses = losses + 0.5 * r.pow(2).sum((1, 2)) / s
                grads[f"{name}.weight"] = layer.weight_grad(u, r).div_(s)
            first_loss = losses if first_loss is None else first_loss
            ok = member_finite(grads.values())
            finite = ok if finite is None else finite & ok
            opt.begin_step()
            for n, p in self.feedback.named_parameters():
                opt.descend(n, p, grads[n])
        return {"feedback_loss": first_loss, "feedback_finite": finite}


# the registered trainer class -> its stacked twin
STACKED: dict[type, type] = {BPTrainer: StackedBP, PCTrainer: StackedPC, TPTrainer: StackedTP}
