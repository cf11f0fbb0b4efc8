"""Predictive coding: relax the hidden activities on a layer-wise energy, then learn locally.

Energy of a batch (activities x_l in pre-activation space, x_0 = input, x_L clamped):

    F = (1/B) Σ_samples Σ_l γ_l/2 · ||x_l − μ_l(x_{l−1})||²,   μ_l(x) = α_l (W_l φ_{l−1}(x) + b_l),

with φ_0 the identity; the output term is γ_L · ℓ(μ_L, y) (ℓ the trainer's loss: ½||y − μ_L||²
or cross-entropy), so the output "error" is e_L = −∂ℓ/∂μ_L. Inference descends F in the hidden
activities with explicit local arithmetic (no autograd), then every layer's weights descend F
using only their own error: direction_{W_l} = (γ_l α_l / B) · e_lᵀ φ(x_{l−1}).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import Trainer, register_trainer
from ._param import LayerRule, Table, register_table


def _tanh(h: torch.Tensor) -> torch.Tensor:
    """tanh(h) = 2σ(2h) − 1: on CPUs torch's sigmoid kernel is ~40 % faster than its tanh (0.21 vs
    0.37 ms on 128×1024 floats, 2 threads; equal to rounding, max |diff| 1.8e-7 in float32). CUDA: tanh."""
    if h.is_cuda:
        return torch.tanh(h)
    return torch.mul(h, 2.0).sigmoid_().mul_(2.0).sub_(1.0)  # one allocation, four passes


def _tanh_pair(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = _tanh(h)
    return t, torch.addcmul(h.new_ones(()), t, t, value=-1.0)  # 1 − t², one pass


# activation -> h ↦ (φ(h), φ'(h)), computed together (tanh' reuses tanh)
_PAIRS = {
    "tanh": _tanh_pair,
    "relu": lambda h: (torch.relu(h), (h > 0).to(h.dtype)),
    "linear": lambda h: (h, torch.ones_like(h)),
}

# loss -> (μ_L, target) ↦ e_L = −∂ℓ/∂μ_L for one sample's ℓ (the trainer's loss_fn times B); classes on
# the last axis, so a leading member axis (trainers._stacked) passes through
_OUTPUT_ERRORS = {
    "mse": lambda mu, y: y - mu,
    "ce": lambda mu, y: F.one_hot(y, mu.shape[-1]).to(mu.dtype).sub_(torch.softmax(mu, dim=-1)),
}

# ---- parametrization tables -------------------------------------------------
# extras: gamma_hidden / gamma_output (γ_l = m^e), inference_lr (β = inference_lr · m^e).


def _extras(gamma_bar_L: float) -> dict[str, float]:
    return {"gamma_hidden": 0.0, "gamma_output": -float(gamma_bar_L), "inference_lr": 0.0}


_SP = LayerRule()
_MUP_OUT = -1.0  # output init variance 1/(fan_in·m) in every μP table
PC_TABLES: dict[tuple[str, str, float], Table] = {}
for _gbar in (0.0, -1.0):
    for _opt in ("sgd", "adam"):
        PC_TABLES[("sp", _opt, _gbar)] = Table(f"pc/sp/{_opt}/gbar={_gbar:g}", _SP, _SP, _SP, _extras(_gbar))
    # Adam normalises the update's size, so γ_L drops out: BP's Adam μP rows (every bias m⁰).
    PC_TABLES[("mup", "adam", _gbar)] = Table(
        f"pc/mup/adam/gbar={_gbar:g}",
        LayerRule(lr=0.0, bias_lr=0.0),
        LayerRule(lr=-1.0, bias_lr=0.0),
        LayerRule(init_var=_MUP_OUT, lr=-1.0, bias_lr=0.0),
        _extras(_gbar),
    )
# SGD, γ̄_L = 0: errors are BP's backpropagated errors (× γ_L = 1), so BP's SGD μP rows
# (input and hidden biases m, output bias m⁰).
PC_TABLES[("mup", "sgd", 0.0)] = Table(
    "pc/mup/sgd/gbar=0",
    LayerRule(lr=1.0, bias_lr=1.0),
    LayerRule(lr=0.0, bias_lr=1.0),
    LayerRule(init_var=_MUP_OUT, lr=-1.0, bias_lr=0.0),
    _extras(0.0),
)
# SGD, γ̄_L = −1: γ_L = m makes every error m× larger than BP's, so every lr is m× smaller
# (input and hidden biases m⁰, output bias m⁻¹).
PC_TABLES[("mup", "sgd", -1.0)] = Table(
    "pc/mup/sgd/gbar=-1",
    LayerRule(lr=0.0, bias_lr=0.0),
    LayerRule(lr=-1.0, bias_lr=0.0),
    LayerRule(init_var=_MUP_OUT, lr=-2.0, bias_lr=-1.0),
    _extras(-1.0),
)


def _pc_key(cfg) -> tuple[str, str, float]:
    return (cfg.parametrization, cfg.optimizer, float(cfg.gamma_bar_L))


for _key, _table in PC_TABLES.items():
    register_table("pc", _key, _table, key_of=_pc_key)


# ---- the trainer --------------------------------------------------------------
@register_trainer("pc")
class PCTrainer(Trainer):
    """Predictive coding behind the :class:`Trainer` API.

    Inference (``inference_steps`` = T steps of size β = ``inference_lr``, all hidden layers at once):

        x_l ← x_l − β ∂F/∂x_l,   ∂F/∂x_l = γ_l e_l − φ'(x_l) ⊙ α_{l+1} W_{l+1}ᵀ (γ_{l+1} e_{l+1}),

    with e_l = x_l − μ_l(x_{l−1}). Switches: ``pc_init`` (activities start at the feedforward
    pass or at 0), ``fixed_prediction`` (μ_l, φ' and the weight-update inputs stay at their
    feedforward values, so e_l = x_l − h_l), ``sequential_inference`` (a single sweep from the
    output down, layer l stepping 1/γ_l; T and β are then unused). With forward init, fixed
    prediction and sequential inference, γ_l e_l equals γ_L × BP's backpropagated error, so the
    update is γ_L × BP's negative gradient.

    Args:
        cfg: the trainer config (``algorithm="pc"``).
        input_dim: d.
        output_dim: C.
        gammas: optional energy weights (γ_1, ..., γ_L) overriding the table's
            (γ_hidden = m^gamma_hidden, γ_L = m^(−γ̄_L)).
    """

    def __init__(self, cfg, input_dim: int, output_dim: int, gammas=None) -> None:
        super().__init__(cfg, input_dim, output_dim)
        m, L = cfg.width_mult, cfg.depth
        if gammas is None:
            gammas = [m ** self.table.extra("gamma_hidden")] * (L - 1) + [m ** self.table.extra("gamma_output")]
        gammas = tuple(float(g) for g in gammas)
        if len(gammas) != L or not all(g > 0 for g in gammas):
            raise ValueError(f"gammas={gammas!r} must be {L} positive numbers (γ_1..γ_L)")
        self.gammas = gammas
        self.inference_lr = float(cfg.inference_lr * m ** self.table.extra("inference_lr"))
        self._pair = _PAIRS[cfg.activation]

    # ---- pieces ----------------------------------------------------------
    def _params(self):
        return list(self.model.layers), list(self.model.multipliers)

    def _output_error(self, mu_L: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """e_L = −∂ℓ/∂μ_L per sample: y − μ_L (MSE) or onehot(y) − softmax(μ_L) (CE)."""
        return _OUTPUT_ERRORS[self.cfg.loss](mu_L, target)

    @staticmethod
    def _predict(psi: torch.Tensor, layer, alpha: float) -> torch.Tensor:
        mu = layer(psi)
        return mu.mul_(alpha) if alpha != 1.0 else mu

    @staticmethod
    def _back(e_up: torch.Tensor, layer, like: torch.Tensor) -> torch.Tensor:
        """W_{l+1}ᵀ e_{l+1} (the layer's adjoint), shaped like the activity x_l."""
        return layer.transpose(e_up, layer.weight, like.shape)

    def _energy(self, errs: list[torch.Tensor], mu_L: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        B = mu_L.shape[0]
        hidden = sum(g * e.pow(2).sum() for g, e in zip(self.gammas[:-1], errs[:-1])) / (2 * B)
        return hidden + self.gammas[-1] * self.loss_fn(mu_L, target)

    # ---- inference ---------------------------------------------------------
    def _lowest_active(self, t: int) -> int:
        """Lowest hidden index (0-based) whose activity can change at step t (0-based).

        From the feedforward pass every hidden error starts at exactly 0 and the output error
        reaches one layer further down per step, so layers below L−2−t are skipped (exact).
        """
        return max(0, self.cfg.depth - 2 - t) if self.cfg.pc_init == "forward" else 0

    def _relax(
        self, xs: list, pairs: list, errs: list, mu1: torch.Tensor, mu_L: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """T parallel inference steps, in place on ``xs`` (x_1..x_{L−1}), ``pairs`` ((φ, φ') of each)
        and ``errs`` (e_1..e_L); returns μ_L at the final activities. Per step and hidden layer:

            x_l ← x_l − βγ_l e_l + βγ_{l+1}α_{l+1} φ'(x_l) ⊙ W_{l+1}ᵀ e_{l+1}     (all l from the old e)
            e_{l+1} ← x_{l+1} − α_{l+1} W_{l+1} φ(x_l)                           (one addmm, Dense)

        Layer 1's term is a lerp towards the fixed μ_1 (x − βγ(x − μ_1)), so e_1 is only formed at
        the end. While the layers below it are still (the first steps from the forward pass), the
        lowest moving layer's μ is fixed too, and its error moves with its activity. Per step: two
        width×width products and a few elementwise passes (benchmarks/NOTES.md).
        """
        layers, alphas = self._params()
        L, g, beta = len(layers), self.gammas, self.inference_lr
        pull = [beta * g[l] for l in range(L - 1)]
        push = [beta * g[l + 1] * alphas[l + 1] for l in range(L - 1)]
        for t in range(self.cfg.inference_steps):
            lo = self._lowest_active(t)
            for l in range(lo, L - 1):
                back = self._back(errs[l + 1], layers[l + 1], xs[l])
                if l == 0:
                    xs[0].lerp_(mu1, pull[0]).addcmul_(pairs[0][1], back, value=push[0])
                elif l == lo:  # layer l−1 is still: μ_l stays, so e_l moves with x_l (x = μ + e)
                    xs[l].sub_(errs[l])
                    errs[l].mul_(1.0 - pull[l]).addcmul_(pairs[l][1], back, value=push[l])
                    xs[l].add_(errs[l])
                else:
                    xs[l].add_(errs[l], alpha=-pull[l]).addcmul_(pairs[l][1], back, value=push[l])
                pairs[l] = self._pair(xs[l])  # while x_l is in cache; no other layer reads φ(x_l) before e
            for l in range(lo, L - 1):
                if l + 1 < L - 1:
                    errs[l + 1] = layers[l + 1].residual(xs[l + 1], pairs[l][0], alphas[l + 1])
                else:
                    mu_L = self._predict(pairs[l][0], layers[l + 1], alphas[l + 1])
                    errs[l + 1] = self._output_error(mu_L, target)
        errs[0] = xs[0] - mu1
        return mu_L

    @torch.no_grad()
    def infer(self, x: torch.Tensor, target: torch.Tensor) -> dict:
        """Run inference on a batch.

        One inference rule, on two schedules (``sequential_inference``: one top-down sweep with
        step 1/γ_l, the paper's single-shot schedule; else ``inference_steps`` parallel steps of
        ``inference_lr``), with the predictions μ either moving with the activities or frozen at
        the feedforward pass (``fixed_prediction``).

        Returns a dict with ``h`` (feedforward pre-activations h_1..h_L), ``xs`` (final hidden
        activities x_1..x_{L−1}), ``errors`` (e_1..e_L at the final activities), ``inputs``
        (φ(x_{l−1}) used by each layer's weight update, φ(x_0) = x), ``loss`` (feedforward loss)
        and ``energy`` (F at the final activities); tensors only, no host synchronisation.
        """
        h, pairs = self.model.forward_pairs(x, self._pair)  # h_1..h_L, (φ(h_l), φ'(h_l)) for l < L
        loss = self.loss_fn(h[-1], target)
        xs = [hl.clone() for hl in h[:-1]] if self.cfg.pc_init == "forward" else [torch.zeros_like(hl) for hl in h[:-1]]
        relax = self._infer_fixed if self.cfg.fixed_prediction else self._infer_moving
        errs, pairs, mu_L = relax(h, pairs, xs, target)
        inputs = [self.model.shape_input(x)] + [p[0] for p in pairs]
        return {
            "h": h,
            "xs": xs,
            "errors": errs,
            "inputs": inputs,
            "loss": loss,
            "energy": self._energy(errs, mu_L, target),
        }

    def _infer_fixed(self, h: list, pairs: list, xs: list, target: torch.Tensor) -> tuple[list, list, torch.Tensor]:
        """Fixed prediction: μ_l = h_l throughout; ``xs`` relaxed in place. Returns (errors, pairs, μ_L)."""
        Ws, alphas = self._params()
        L, g = len(Ws), self.gammas
        mus = list(h)  # predictions frozen at the feedforward pass
        e_L = self._output_error(h[-1], target)
        dphis = [p[1] for p in pairs]
        if self.cfg.sequential_inference:
            for l in range(L - 2, -1, -1):  # x_{l+1} in 1-based terms, top down, step 1/γ
                e_up = e_L if l == L - 2 else xs[l + 1] - mus[l + 1]
                back = self._back(e_up, Ws[l + 1], xs[l]).mul_(g[l + 1] * alphas[l + 1] / g[l]).mul_(dphis[l])
                xs[l] = mus[l] + back  # = x_l − (1/γ_l) ∂F/∂x_l, since x_l − e_l = μ_l
        else:
            beta = self.inference_lr
            for t in range(self.cfg.inference_steps):
                lo = self._lowest_active(t)
                errs = [None] * lo + [xl - ml for xl, ml in zip(xs[lo:], mus[lo:-1])] + [e_L]
                for l in range(lo, L - 1):
                    back = self._back(errs[l + 1], Ws[l + 1], xs[l])
                    xs[l].add_(errs[l], alpha=-beta * g[l]).addcmul_(
                        dphis[l], back, value=beta * g[l + 1] * alphas[l + 1]
                    )
        return [xl - ml for xl, ml in zip(xs, mus)] + [e_L], pairs, h[-1]

    def _infer_moving(self, h: list, pairs: list, xs: list, target: torch.Tensor) -> tuple[list, list, torch.Tensor]:
        """Predictions move with the activities; ``xs`` relaxed in place. Returns (errors, pairs, μ_L)."""
        Ws, alphas = self._params()
        L = len(Ws)
        mu1 = h[0]  # W_1 x_0 never changes during inference: cached
        forward = self.cfg.pc_init == "forward"
        pairs = list(pairs) if forward else [self._pair(xl) for xl in xs]
        mus = list(h) if forward else ([mu1] + [self._predict(pairs[l - 1][0], Ws[l], alphas[l]) for l in range(1, L)])
        if self.cfg.sequential_inference:
            mus = self._sweep_down(xs, pairs, mu1, target)
        errs = [xl - ml for xl, ml in zip(xs, mus)] + [self._output_error(mus[-1], target)]
        mu_L = mus[-1] if self.cfg.sequential_inference else self._relax(xs, pairs, errs, mu1, mus[-1], target)
        return errs, pairs, mu_L

    def _sweep_down(self, xs: list, pairs: list, mu1: torch.Tensor, target: torch.Tensor) -> list:
        """The single-shot schedule: one top-down sweep, each x_l stepped by 1/γ_l; returns the new μ."""
        Ws, alphas = self._params()
        L, g = len(Ws), self.gammas
        for l in range(L - 2, -1, -1):
            psi_l, dphi_l = pairs[l]
            mu_up = self._predict(psi_l, Ws[l + 1], alphas[l + 1])
            e_up = self._output_error(mu_up, target) if l == L - 2 else xs[l + 1] - mu_up
            mu_l = mu1 if l == 0 else self._predict(pairs[l - 1][0], Ws[l], alphas[l])
            back = self._back(e_up, Ws[l + 1], xs[l]).mul_(g[l + 1] * alphas[l + 1]).mul_(dphi_l)
            grad = (xs[l] - mu_l).mul_(g[l]).sub_(back)
            xs[l] = xs[l].sub(grad, alpha=1.0 / g[l])
            pairs[l] = self._pair(xs[l])
        return [mu1] + [self._predict(pairs[l - 1][0], Ws[l], alphas[l]) for l in range(1, L)]

    # ---- learning ----------------------------------------------------------
    @staticmethod
    def _samples(inputs: torch.Tensor) -> int:
        """The batch size B of a layer's input (its first axis; the stacked trainers' second)."""
        return inputs.shape[0]

    def energy_gradient(self, state: dict) -> dict[str, torch.Tensor]:
        """∂F/∂θ at relaxed activities (``state`` from :meth:`infer`): what the optimizer descends.

        ∂F/∂W_l = −(γ_l α_l / B) e_lᵀ φ(x_{l−1}),  ∂F/∂b_l = −(γ_l α_l / B) Σ_samples e_l
        (the scale is applied inside the product, not as a pass over the result).
        """
        layers, alphas = self._params()
        B = self._samples(state["inputs"][0])
        grads = {}
        for l, (layer, e, inp) in enumerate(zip(layers, state["errors"], state["inputs"])):
            scale = -self.gammas[l] * alphas[l] / B
            grads[f"layers.{l}.weight"] = layer.weight_grad(e, inp, scale)
            if layer.bias is not None:
                grads[f"layers.{l}.bias"] = layer.bias_grad(e, scale)
        return grads

    def weight_direction(self, state: dict) -> dict[str, torch.Tensor]:
        """−∂F/∂θ at relaxed activities (``state`` from :meth:`infer`).

        direction_{W_l} = (γ_l α_l / B) e_lᵀ φ(x_{l−1}),  direction_{b_l} = (γ_l α_l / B) Σ_samples e_l.
        """
        return {n: g.neg_() for n, g in self.energy_gradient(state).items()}

    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        state = self.infer(x, target)
        return self.energy_gradient(state), {"loss": state["loss"], "energy": state["energy"]}
