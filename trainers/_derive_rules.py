"""The built-in algorithms' desiderata for ``derive`` (see ``_derive.register_desiderata``).

BP needs none: the generic conditions (pre-activations at init; every layer's own change, the
change carried up through the initial weights, and the total change) pin all six exponents.
PC declares one condition: the output error e_L left after
inference has width-independent size. Without it, from SP at γ̄_L = −1 (γ_L = m) the relaxed
activities absorb the output error (e_L ~ 1/(1 + γ_L ||W_L||²) ~ 1/m), every slope leaves the
linear regime, and the search stalls at output init_var 0; the relaxation also becomes unstable
(β γ_L ||W_L||² grows like m), so PC at γ̄_L ≠ 0 is derived by continuation: at γ̄_L = 0 first,
then from those rows. γ_L itself is the family's input (the
table key ``gamma_bar_L`` sets ``gamma_output``); ``gamma_hidden`` and ``inference_lr`` are kept
from the starting table. TP declares its extras and the conditions that pin them: the output at init has width-independent
size (the carried change pins it too: TP's hidden updates do not travel through W_Lᵀ, so W_L(0)
must stay at 1/fan_in for what they carry into the output to be Θ(1)), every target
difference δ_k is width-independent, and so is each feedback map's own change on the noise draw
it was trained on (on a fresh draw, ΔQ u sums n uncorrelated terms and would ask for lr m^(−1/2),
under which the training draws' change grows like m^(1/2)).
"""

from __future__ import annotations

import torch

from ._derive import Desiderata, register_desiderata
from ._param import ROLES, LayerRule
from ._tp_feedback import apply_feedback, drl_samples


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


@torch.no_grad()
def tp_probe(trainer, x: torch.Tensor, y: torch.Tensor, start, step: int) -> dict:
    """Step 0: RMS of every target difference δ_k. Step t: RMS of each feedback map's own change
    (Q_k(t) − Q_k(t−1)) on the noise draw it was trained on at step t (its first, when
    ``feedback_steps`` > 1), like a forward layer's own change on its batch. ``start`` carries the
    weights, generator state and activities from one step to the next."""
    net = trainer.model
    hs = net.preactivations(x)
    now = {
        "q": {n: p.detach().clone() for n, p in trainer.feedback.named_parameters()},
        "gen": trainer.noise_gen.get_state(),
        "hs": hs,
    }
    if step == 0:
        out = {f"target layers.{k}": _rms(d) for k, d in enumerate(trainer._deltas(hs, y))}
        out["_start"] = now
        return out
    gen = torch.Generator(device=trainer.device)
    gen.set_state(start["gen"])
    out = {}
    for k in range(1, net.depth):  # the draws of the step, in _draw's order
        u, e = drl_samples(
            net.layers[k],
            net.multipliers[k],
            net.phi,
            trainer.psi,
            start["hs"][k - 1],
            start["hs"][k],
            trainer.cfg.feedback_noise,
            gen,
        )
        dq = now["q"][f"g{k}.weight"] - start["q"][f"g{k}.weight"]
        out[f"feedback g{k}"] = _rms(apply_feedback(net.layers[k], dq, u, e.shape))
    start.update(now)
    return out


register_desiderata(
    "tp",
    Desiderata(
        extras=(
            "target_step",
            "feedback_output_init_var",
            "feedback_hidden_init_var",
            "feedback_output_lr",
            "feedback_hidden_lr",
        ),
        output_init=True,
        probe=tp_probe,
        note="TP: output Θ(1) at init; targets δ_k and feedback changes width-independent; "
        "feedback ridge exponents are kept (used only by feedback=regression*)",
    ),
)


@torch.no_grad()
def pc_probe(trainer, x: torch.Tensor, y: torch.Tensor, start, step: int) -> dict:
    """Step 0: RMS of the output error e_L left after inference (the one the updates carry)."""
    if step != 0:
        return {}
    return {"inference output error": _rms(trainer.infer(x, y)["errors"][-1])}


def pc_continuation(cfg, start) -> list:
    """From SP's rows at γ̄_L ≠ 0: derive at γ̄_L = 0 first (there the relaxation at γ_L = m is outside
    the linear regime); any other start is searched directly."""
    sp_rows = all(start.rule(r) == LayerRule() for r in ROLES)
    return [cfg.replace(gamma_bar_L=0.0)] if float(cfg.gamma_bar_L) != 0.0 and sp_rows else []


register_desiderata(
    "pc",
    Desiderata(
        probe=pc_probe,
        continuation=pc_continuation,
        note="PC: the output error left after inference is width-independent (else γ_L W_Lᵀ W_L grows and "
        "inference explains the error away); gamma_output = -gamma_bar_L is the family's input; "
        "gamma_hidden and inference_lr are kept from the start table (not searched)",
    ),
)
