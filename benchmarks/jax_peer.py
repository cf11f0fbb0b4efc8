"""The JAX peer: the same PC step in plain JAX (``lax.fori_loop`` under ``jit``), timed beside ours.

Issue 9 measures PC "ahead of the peers" (pcx and plain JAX); this puts a plain-JAX PC step on
the same network, batch, T and machine into the same round-robin as the torch trainers, so the
comparison is a ratio within one run. Optional: without JAX installed
(``pip install -e .[bench]``) the rows say so.

The step: forward pass; T parallel inference steps on the energy
F = Σ_l ½||x_l − W_l tanh(x_{l−1})||² + ½||y − W_L tanh(x_{L−1})||² (x_0 = input, unit γ, β = 0.1),
each doing the two width×width products of W_2 (prediction and its transpose), fused by XLA;
then the local weight gradients and an SGD step. No μP multipliers (they cost nothing).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def pc_step_fn(width: int, batch: int, steps: int, d_in: int = 784, d_out: int = 10,
               beta: float = 0.1, lr: float = 1e-3, seed: int = 0) -> Callable[[], object]:
    """A no-argument callable running one jitted PC training step (784-width-width-10 tanh MLP)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    rng = np.random.default_rng(seed)
    ws = [jnp.asarray(rng.standard_normal((o, i), dtype=np.float32) / np.sqrt(i))
          for i, o in ((d_in, width), (width, width), (width, d_out))]
    x = jnp.asarray(rng.standard_normal((batch, d_in), dtype=np.float32))
    y = jax.nn.one_hot(rng.integers(0, d_out, batch), d_out, dtype=jnp.float32)

    @jax.jit
    def step(ws, x, y):
        w1, w2, w3 = ws
        mu1 = x @ w1.T                       # fixed during inference
        x2 = jnp.tanh(mu1) @ w2.T

        def body(_, carry):
            a1, a2 = carry
            t1, t2 = jnp.tanh(a1), jnp.tanh(a2)
            e1, e2, e3 = a1 - mu1, a2 - t1 @ w2.T, y - t2 @ w3.T
            a1 = a1 - beta * (e1 - (1 - t1 * t1) * (e2 @ w2))
            a2 = a2 - beta * (e2 - (1 - t2 * t2) * (e3 @ w3))
            return a1, a2

        a1, a2 = lax.fori_loop(0, steps, body, (mu1, x2))
        t1, t2 = jnp.tanh(a1), jnp.tanh(a2)
        e1, e2, e3 = a1 - mu1, a2 - t1 @ w2.T, y - t2 @ w3.T
        grads = (e1.T @ x, e2.T @ t1, e3.T @ t2)
        loss = 0.5 * jnp.sum(e3 * e3) / x.shape[0]
        return [w + (lr / x.shape[0]) * g for w, g in zip(ws, grads)], loss

    state = {"ws": ws}

    def run():
        state["ws"], loss = step(state["ws"], x, y)
        return float(loss)  # blocks until the step is done, as our trainers' float(loss) does

    return run
