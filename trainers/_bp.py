"""Backpropagation: the reference. Its update direction is the negative gradient."""

from __future__ import annotations

import torch

from ._base import Trainer, register_trainer
from ._param import SP, LayerRule, Table, register_table

# Tensor Programs V, Table 3 (relative to the base width). Biases (bias_lr): SGD ∝ fan-out, so the
# input and hidden biases move like the input row (m) and the output bias like m⁰; Adam: m⁰ for all.
BP_TABLES: dict[tuple[str, str], Table] = {
    ("sp", "sgd"): Table("bp/sp/sgd", SP, SP, SP),
    ("sp", "adam"): Table("bp/sp/adam", SP, SP, SP),
    ("mup", "sgd"): Table(
        "bp/mup/sgd",
        input=LayerRule(lr=1.0, bias_lr=1.0),  # η·m, bias η·m
        hidden=LayerRule(lr=0.0, bias_lr=1.0),  # η, bias η·m
        output=LayerRule(init_var=-1.0, lr=-1.0, bias_lr=0.0),  # 1/(fan_in·m), η/m, bias η
    ),
    ("mup", "adam"): Table(
        "bp/mup/adam",
        input=LayerRule(lr=0.0, bias_lr=0.0),  # η
        hidden=LayerRule(lr=-1.0, bias_lr=0.0),  # η/m, bias η
        output=LayerRule(init_var=-1.0, lr=-1.0, bias_lr=0.0),  # 1/(fan_in·m), η/m, bias η
    ),
}
for _key, _table in BP_TABLES.items():
    register_table("bp", _key, _table)


@register_trainer("bp")
class BPTrainer(Trainer):
    """Backpropagation: direction_p = −∂loss/∂p for every parameter p."""

    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        names, params = zip(*self.model.named_parameters())
        with torch.enable_grad():
            loss = self.loss_fn(self.model(x), target)
            grads = torch.autograd.grad(loss, params)
        return dict(zip(names, grads)), {"loss": loss.detach()}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One SGD/Adam step on the batch loss, the plain PyTorch way (``backward``, ``optimizer.step``).

        Same update as applying :meth:`update_direction` with the per-layer learning
        rates; a non-finite or too large loss is reported as diverged and not applied.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), self.targets(y))
        loss.backward()
        value = float(loss.detach())
        diverged = self._is_diverged(value)
        if not diverged:
            self.optimizer.step()
        return {"loss": value, "diverged": diverged}
