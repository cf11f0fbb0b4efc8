"""Backpropagation: the reference. Its update direction is the negative gradient."""

from __future__ import annotations

import torch

from ._base import Trainer, register_trainer


@register_trainer("bp")
class BPTrainer(Trainer):
    """Backpropagation: direction_p = −∂loss/∂p for every parameter p."""

    def _direction(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        names, params = zip(*self.model.named_parameters())
        with torch.enable_grad():
            loss = self.loss_fn(self.model(x), target)
            grads = torch.autograd.grad(loss, params)
        return {n: -g for n, g in zip(names, grads)}, {"loss": loss.detach()}
