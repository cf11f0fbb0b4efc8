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
    """Backpropagation: direction_p = −∂loss/∂p for every parameter p.

    The gradient is computed with the layers' explicit adjoints (``_layers``), so its products take
    the same fast path as PC's and TP's (``_products``); equal to autograd's to rounding (tested in
    float64 to 1e-12)."""

    @torch.no_grad()
    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """∂loss/∂θ by the chain rule through the adjoints: with h_l = α_l (W_l ⋆ a_{l−1} + b_l) and
        d_l = α_l ∂loss/∂h_l, ∂loss/∂W_l = d_lᵀ ⋆ a_{l−1}, ∂loss/∂b_l = Σ d_l, and
        ∂loss/∂h_{l−1} = φ'(h_{l−1}) ⊙ W_lᵀ d_l."""
        from ._pc import _PAIRS  # activation -> h ↦ (φ(h), φ'(h)) in one pass (here: "bp" registers first)

        model = self.model
        hs, pairs = model.forward_pairs(x, _PAIRS[model.activation])
        inputs = [model.shape_input(x)] + [p[0] for p in pairs]
        grads: dict[str, torch.Tensor] = {}
        delta = self.loss_grad(hs[-1], target)
        for l in range(model.depth - 1, -1, -1):
            layer, alpha = model.layers[l], model.multipliers[l]
            d = delta.mul(alpha) if alpha != 1.0 else delta
            grads[f"layers.{l}.weight"] = layer.weight_grad(d, inputs[l])
            if layer.bias is not None:
                grads[f"layers.{l}.bias"] = layer.bias_grad(d)
            if l > 0:
                delta = layer.transpose(d, layer.weight, inputs[l].shape).mul_(pairs[l - 1][1])
        return {n: grads[n] for n, _ in model.named_parameters()}, {"loss": self.loss_fn(hs[-1], target)}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One SGD/Adam step on the batch loss: the explicit gradient, then ``optimizer.step``.

        A non-finite or too large loss is reported as diverged and not applied.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        grads, stats = self._gradient(x, self.targets(y))
        value = float(stats["loss"])
        diverged = self._is_diverged(value)
        if not diverged:
            self._apply(grads)
        return {"loss": value, "diverged": diverged}
