"""Difference target propagation (DTP) with difference correction, under SP and μP.

One step on a batch (x, y), with h_k = α_k W_k φ(h_{k−1}) the forward preactivations:

1. feedback: each map g_k takes ``feedback_steps`` SGD (or Adam) steps on its difference
   reconstruction loss (``_tp_feedback``), or, with ``feedback="regression"``, is set in closed
   form to the ridge solution of the reconstruction loss on noise-perturbed activities;
2. targets: δ_{L−1} = −β ∂loss/∂h_{L−1} at the output, then δ_{k−1} = g_k(h_k + δ_k) − g_k(h_k);
3. forward layers: each W_k descends its own local loss ½ Σ_batch ||h_k − ĥ_k||² with its input
   detached, so its direction is α_k δ_kᵀ φ(h_{k−1}) (x for k = 0); no gradient crosses layers.

The output's direction is β × BP's; the rest depends only on the feedback maps.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch

from ._base import Trainer, all_finite, register_trainer
from ._config import TrainerConfig
from ._layers import Dense
from ._param import LayerRule, Table, register_table
from ._tp_feedback import (
    REGRESSION_KINDS,
    apply_feedback,
    drl_grad,
    drl_samples,
    feedback_psi,
    feedback_role,
    init_feedback,
    make_feedback,
    propagate_targets,
    reconstruction_samples,
    ridge_solution,
)

FEEDBACK_ROLES = ("feedback_output", "feedback_hidden")


def _extras(**kw) -> MappingProxyType:
    keys = ["target_step"] + [f"{r}_{q}" for r in FEEDBACK_ROLES for q in ("init_var", "lr", "ridge")]
    unknown = set(kw) - set(keys)
    if unknown:
        raise ValueError(f"unknown TP table extras {sorted(unknown)}; valid: {', '.join(keys)}")
    return MappingProxyType({k: float(kw.get(k, 0.0)) for k in keys})


# Exponents of m = width / base_width (see _param). Forward rows, then TP's extras:
# target_step (β), and per feedback role its init variance, learning rate and ridge λ.
# feedback_output inverts the output layer (C -> n, fan_in C, like an input layer);
# feedback_hidden inverts a hidden layer (n -> n). SGD and Adam share the exponents: TP's
# targets δ_k are Θ(1) per unit, so every direction δ φᵀ already has Θ(1) entries, as
# Adam's normalised ones do (both checked by tests/trainers/test_tp_coord.py). The hidden
# maps' ridge grows like m because the Gram of n-dim activities does.
TP_TABLES: dict[tuple[str, str], Table] = {}
for _opt in ("sgd", "adam"):
    TP_TABLES[("sp", _opt)] = Table(f"tp/sp/{_opt}", LayerRule(), LayerRule(), LayerRule(), _extras())
    TP_TABLES[("mup", _opt)] = Table(
        f"tp/mup/{_opt}",
        input=LayerRule(lr=0.0, bias_lr=0.0),
        hidden=LayerRule(lr=-1.0, bias_lr=0.0),  # a bias's direction is its target δ_l: Θ(1) per unit
        output=LayerRule(init_var=0.0, lr=-1.0, bias_lr=0.0),  # the standard last-layer init (b_L = 1/2)
        extras=_extras(feedback_hidden_lr=-1.0, feedback_hidden_ridge=1.0),
    )
for _key, _table in TP_TABLES.items():
    register_table("tp", _key, _table, key_of=lambda cfg: (cfg.parametrization, cfg.optimizer))


@register_trainer("tp")
class TPTrainer(Trainer):
    """DTP: forward layers learn from difference-corrected targets given by feedback maps.

    Attributes beyond :class:`Trainer`: ``feedback`` (``nn.ModuleDict`` of ``g1 .. g{L−1}``),
    ``feedback_optimizer`` (None for ``feedback="regression"``), ``beta`` (β · m^e).
    """

    def __init__(self, cfg: TrainerConfig, input_dim: int, output_dim: int) -> None:
        super().__init__(cfg, input_dim, output_dim)
        m, depth = cfg.width_mult, cfg.depth
        self.kind = cfg.feedback
        self.psi = feedback_psi(self.kind)
        self.beta = cfg.target_step * m ** self.table.extra("target_step")
        if self.kind in REGRESSION_KINDS and not all(isinstance(layer, Dense) for layer in self.model.layers[1:]):
            raise ValueError(
                f"feedback={self.kind!r} (a closed-form dense solution) needs model='mlp'; "
                f"with model={cfg.model!r} use feedback='linear' or 'tanh'"
            )
        self.feedback = make_feedback(self.model.layers)
        init_feedback(self.feedback, depth, {r: self.table.extra(f"{r}_init_var") for r in FEEDBACK_ROLES}, m, cfg.seed)
        self.feedback.to(device=self.device, dtype=self.dtype)
        self.feedback.requires_grad_(False)
        roles = {f"g{k}": feedback_role(k, depth) for k in range(1, depth)}
        self.feedback_lr_multipliers = {
            f"{n}.weight": float(m ** self.table.extra(f"{r}_lr")) for n, r in roles.items()
        }
        self.ridge = {n: cfg.feedback_ridge * m ** self.table.extra(f"{r}_ridge") for n, r in roles.items()}
        self.feedback_optimizer = None
        if self.kind not in REGRESSION_KINDS:
            self.feedback_optimizer = self._make_optimizer(
                self.feedback.named_parameters(), self.feedback_lr_multipliers, cfg.feedback_lr
            )
        self.noise_gen = torch.Generator(device=self.device).manual_seed(int(cfg.seed) + 1)

    # ---- the three parts of a step ---------------------------------------
    @torch.no_grad()
    def update_feedback(self, x: torch.Tensor, hs: list[torch.Tensor] | None = None) -> dict:
        """Train (or set) the feedback maps on batch x, a fresh noise draw per feedback step.

        ``linear``/``tanh``: ``feedback_steps`` optimizer steps on the difference reconstruction
        loss (DRL). ``regression``: Q_k = ridge solution of the classic reconstruction loss
        ½ mean ||Q_k f_k(h_{k−1} + ε) − (h_{k−1} + ε)||² over all draws; ``regression_drl``:
        ridge solution of the DRL itself; λ_k = ``feedback_ridge`` · m^e (table).

        Returns:
            ``feedback_loss`` (the loss summed over maps, before the update, first draw) and
            ``feedback_finite``; a non-finite gradient or solution is not applied.
        """
        if hs is None:
            hs = self.model.preactivations(x.to(device=self.device, dtype=self.dtype))
        if self.feedback_optimizer is None:
            return self._solve_feedback(hs)
        return self._train_feedback(hs)

    def _draw(self, hs: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One noise draw per feedback map g_k: its (input, target) pair for the map's loss."""
        model, cfg = self.model, self.cfg
        sampler = reconstruction_samples if self.kind == "regression" else drl_samples
        return {
            f"g{k}": sampler(
                model.layers[k],
                model.multipliers[k],
                model.phi,
                self.psi,
                hs[k - 1],
                hs[k],
                cfg.feedback_noise,
                self.noise_gen,
            )
            for k in range(1, model.depth)
        }

    def _train_feedback(self, hs: list[torch.Tensor]) -> dict:
        """``feedback_steps`` optimizer steps on the DRL, a fresh draw each; stops at a non-finite gradient."""
        first_loss, finite = None, True
        for _ in range(self.cfg.feedback_steps):
            losses, grads = 0.0, {}
            for k, (name, (u, e)) in enumerate(self._draw(hs).items(), start=1):
                value, grads[f"{name}.weight"] = drl_grad(self.model.layers[k], self.feedback[name].weight, u, e)
                losses += float(value)
            first_loss = losses if first_loss is None else first_loss
            if not all_finite(grads.values()):
                finite = False
                break
            for n, p in self.feedback.named_parameters():
                p.grad = grads[n]
            self.feedback_optimizer.step()
            self.feedback_optimizer.zero_grad(set_to_none=True)
        return {"feedback_loss": first_loss, "feedback_finite": finite}

    def _solve_feedback(self, hs: list[torch.Tensor]) -> dict:
        """Q_k = the ridge solution over ``feedback_steps`` draws (the loss reported: before, first draw)."""
        draws = [self._draw(hs) for _ in range(self.cfg.feedback_steps)]
        first_loss = (
            sum(
                0.5
                * float((apply_feedback(self.model.layers[k], self.feedback[name].weight, u, e.shape) - e).pow(2).sum())
                / u.shape[0]
                for k, (name, (u, e)) in enumerate(draws[0].items(), start=1)
            )
            if draws
            else None
        )
        solved = {
            n: ridge_solution(torch.cat([d[n][0] for d in draws]), torch.cat([d[n][1] for d in draws]), self.ridge[n])
            for n in (draws[0] if draws else {})
        }
        finite = all_finite(solved.values())
        if finite:
            for n, q in solved.items():
                self.feedback[n].weight.copy_(q)
        return {"feedback_loss": first_loss, "feedback_finite": finite}

    @torch.no_grad()
    def target_differences(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """[δ_0 .. δ_{L−1}] = ĥ_k − h_k on (x, y) with the current feedback (nothing updated)."""
        x = x.to(device=self.device, dtype=self.dtype)
        hs = self.model.preactivations(x)
        return self._deltas(hs, self.targets(y))

    def _deltas(self, hs: list[torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        delta_out = -self.beta * self.loss_grad(hs[-1], target)
        return propagate_targets(self.feedback, self.model.layers, self.psi, hs, delta_out)

    @torch.no_grad()
    def _local_gradients(
        self, x: torch.Tensor, hs: list[torch.Tensor], deltas: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """∂/∂θ of ½ Σ ||h_k − ĥ_k||² with φ(h_{k−1}) detached: −α_k δ_kᵀ φ(h_{k−1}), −α_k Σ δ_k."""
        model = self.model
        out = {}
        for k, layer in enumerate(model.layers):
            inp = model.shape_input(x) if k == 0 else model.phi(hs[k - 1])
            out[f"layers.{k}.weight"] = layer.weight_grad(deltas[k], inp, -model.multipliers[k])
            if layer.bias is not None:
                out[f"layers.{k}.bias"] = layer.bias_grad(deltas[k], -model.multipliers[k])
        return out

    # ---- Trainer API -----------------------------------------------------
    @torch.no_grad()
    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        hs = self.model.preactivations(x)
        deltas = self._deltas(hs, target)
        return self._local_gradients(x, hs, deltas), {"loss": self.loss_fn(hs[-1], target)}

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One DTP step: feedback first, then targets from the updated feedback, then forward layers.

        Returns ``loss`` (before the step), ``feedback_loss`` (DRL before the feedback update),
        ``diverged``. A non-finite or too large loss, or a non-finite feedback or forward
        update, gives ``diverged=True``; the forward weights are then left untouched.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        target = self.targets(y)
        hs = self.model.preactivations(x)
        loss = float(self.loss_fn(hs[-1], target))
        stats = {"loss": loss, "feedback_loss": float("nan"), "diverged": True}
        if self._is_diverged(loss):
            return stats
        fb = self.update_feedback(x, hs)
        stats["feedback_loss"] = fb["feedback_loss"]
        if not (fb["feedback_finite"] and math.isfinite(fb["feedback_loss"])):
            return stats
        grads = self._local_gradients(x, hs, self._deltas(hs, target))
        if not all_finite(grads.values()):
            return stats
        self._apply(grads)
        stats["diverged"] = False
        return stats
