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

    update_in_backward = True  # plain SGD: update each layer during the backward pass (see step)

    @torch.no_grad()
    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """∂loss/∂θ by the chain rule through the adjoints (:meth:`_backward`)."""
        hs, pairs, inputs = self._forward(x)
        grads: dict[str, torch.Tensor] = {}
        self._backward(hs, pairs, inputs, target, grads.__setitem__)
        return {n: grads[n] for n, _ in self.model.named_parameters()}, {"loss": self.loss_fn(hs[-1], target)}

    def _forward(self, x: torch.Tensor) -> tuple[list, list, list]:
        """Pre-activations h_1..h_L, (φ, φ') of each hidden one, and each layer's input a_{l−1}."""
        from ._pc import _PAIRS  # activation -> h ↦ (φ(h), φ'(h)) in one pass (here: "bp" registers first)

        model = self.model
        hs, pairs = model.forward_pairs(x, _PAIRS[model.activation])
        return hs, pairs, [model.shape_input(x)] + [p[0] for p in pairs]

    def _backward(self, hs: list, pairs: list, inputs: list, target: torch.Tensor, sink) -> None:
        """With h_l = α_l (W_l ⋆ a_{l−1} + b_l) and d_l = α_l ∂loss/∂h_l: ∂loss/∂W_l = d_lᵀ ⋆ a_{l−1},
        ∂loss/∂b_l = Σ d_l, ∂loss/∂h_{l−1} = φ'(h_{l−1}) ⊙ W_lᵀ d_l, from the top layer down. Each
        parameter's gradient goes to ``sink(name, grad)`` once layer l's weight is no longer needed
        (after its adjoint), so ``sink`` may update it in place."""
        model = self.model
        delta = self.loss_grad(hs[-1], target)
        for l in range(model.depth - 1, -1, -1):
            layer, alpha = model.layers[l], model.multipliers[l]
            d = delta.mul(alpha) if alpha != 1.0 else delta
            weight_grad = layer.weight_grad(d, inputs[l])
            bias_grad = layer.bias_grad(d) if layer.bias is not None else None
            if l > 0:
                delta = layer.transpose(d, layer.weight, inputs[l].shape).mul_(pairs[l - 1][1])
            sink(f"layers.{l}.weight", weight_grad)
            if bias_grad is not None:
                sink(f"layers.{l}.bias", bias_grad)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One SGD/Adam step on the batch loss. A non-finite or too large loss is reported as diverged
        and nothing is applied.

        Plain SGD updates each layer as soon as its gradient and adjoint are computed (while the
        gradient is in cache: ``Trainer._sgd_now``); Adam takes the whole gradient, then
        ``optimizer.step``. The two give the same weights (tested).
        """
        x = x.to(device=self.device, dtype=self.dtype)
        target = self.targets(y)
        hs, pairs, inputs = self._forward(x)
        value = float(self.loss_fn(hs[-1], target))
        diverged = self._is_diverged(value)
        if not diverged:
            descend = self._sgd_now() if self.update_in_backward else None
            if descend is not None:
                self._backward(hs, pairs, inputs, target, descend)
            else:
                grads: dict[str, torch.Tensor] = {}
                self._backward(hs, pairs, inputs, target, grads.__setitem__)
                self._apply(grads)
        return {"loss": value, "diverged": diverged}
