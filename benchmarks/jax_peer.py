"""The JAX peers: the same BP, PC and TP steps in plain JAX (``jit``; PC's loop a ``lax.fori_loop``), timed beside ours.

Issue 9 measures PC "ahead of the peers" (pcx and plain JAX); this puts a plain-JAX PC step on
the same network, batch, T and machine into the same round-robin as the torch trainers, so the
comparison is a ratio within one run. Optional: without JAX installed
(``pip install -e .[bench]``) the rows say so.

The step: forward pass; T parallel inference steps on the energy
F = Σ_l ½||x_l − W_l tanh(x_{l−1})||² + ½||y − W_L tanh(x_{L−1})||² (x_0 = input, unit γ, β = 0.1),
each doing the two width×width products of W_2 (prediction and its transpose), fused by XLA;
then the local weight gradients and an SGD step. No μP multipliers (they cost nothing).

The BP step: ``jax.value_and_grad`` of the same network's MSE loss and an SGD step. The TP step:
our TP trainer's (DTP, linear feedback, one feedback SGD step on the difference reconstruction loss
with fresh Gaussian noise, difference-corrected targets, local weight gradients; 14 products).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _setup(width: int, batch: int, d_in: int, d_out: int, seed: int):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    ws = [
        jnp.asarray(rng.standard_normal((o, i), dtype=np.float32) / np.sqrt(i))
        for i, o in ((d_in, width), (width, width), (width, d_out))
    ]
    x = jnp.asarray(rng.standard_normal((batch, d_in), dtype=np.float32))
    y = jax.nn.one_hot(rng.integers(0, d_out, batch), d_out, dtype=jnp.float32)
    return rng, ws, x, y


def bp_step_fn(
    width: int, batch: int, d_in: int = 784, d_out: int = 10, lr: float = 1e-3, seed: int = 0
) -> Callable[[], object]:
    """A no-argument callable running one jitted BP + SGD step (784-width-width-10 tanh MLP, MSE)."""
    import jax
    import jax.numpy as jnp

    _, ws, x, y = _setup(width, batch, d_in, d_out, seed)

    def loss(ws, x, y):
        w1, w2, w3 = ws
        out = jnp.tanh(jnp.tanh(x @ w1.T) @ w2.T) @ w3.T
        return 0.5 * jnp.sum((out - y) ** 2) / x.shape[0]

    @jax.jit
    def step(ws, x, y):
        value, grads = jax.value_and_grad(loss)(ws, x, y)
        return [w - lr * g for w, g in zip(ws, grads)], value

    state = {"ws": ws}

    def run():
        state["ws"], value = step(state["ws"], x, y)
        return float(value)

    return run


def tp_step_fn(
    width: int,
    batch: int,
    d_in: int = 784,
    d_out: int = 10,
    lr: float = 1e-3,
    feedback_lr: float = 0.01,
    beta: float = 0.1,
    noise: float = 0.1,
    seed: int = 0,
) -> Callable[[], object]:
    """A no-argument callable running one jitted DTP step, as ``trainers._tp.TPTrainer.step`` does."""
    import jax
    import jax.numpy as jnp

    rng, ws, x, y = _setup(width, batch, d_in, d_out, seed)
    qs = [jnp.asarray(rng.standard_normal(w.shape, dtype=np.float32) / np.sqrt(w.shape[0])) for w in ws[1:]]

    @jax.jit
    def step(ws, qs, key, x, y):
        w1, w2, w3 = ws
        h = [x @ w1.T]
        h.append(jnp.tanh(h[0]) @ w2.T)
        h.append(jnp.tanh(h[1]) @ w3.T)
        keys = jax.random.split(key, 3)
        new_qs = []
        for k, (w, q) in enumerate(zip(ws[1:], qs), start=1):  # one DRL step per feedback map
            eps = noise * jax.random.normal(keys[k], h[k - 1].shape, jnp.float32)
            u = (jnp.tanh(h[k - 1] + eps) @ w.T - h[k]) / noise
            r = u @ q - eps / noise
            new_qs.append(q - feedback_lr * (u.T @ r) / x.shape[0])
        deltas = [-beta * (h[2] - y) / x.shape[0]]
        for k in (2, 1):  # difference-corrected targets through the updated feedback (ψ = id)
            deltas.insert(0, ((h[k] + deltas[0]) - h[k]) @ new_qs[k - 1])
        inputs = [x, jnp.tanh(h[0]), jnp.tanh(h[1])]
        new_ws = [w + lr * (d.T @ a) for w, d, a in zip(ws, deltas, inputs)]
        return new_ws, new_qs, keys[0], 0.5 * jnp.sum((h[2] - y) ** 2) / x.shape[0]

    state = {"ws": ws, "qs": qs, "key": jax.random.PRNGKey(seed)}

    def run():
        state["ws"], state["qs"], state["key"], value = step(state["ws"], state["qs"], state["key"], x, y)
        return float(value)

    return run


def pc_step_fn(
    width: int,
    batch: int,
    steps: int,
    d_in: int = 784,
    d_out: int = 10,
    beta: float = 0.1,
    lr: float = 1e-3,
    seed: int = 0,
) -> Callable[[], object]:
    """A no-argument callable running one jitted PC training step (784-width-width-10 tanh MLP)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    _, ws, x, y = _setup(width, batch, d_in, d_out, seed)

    @jax.jit
    def step(ws, x, y):
        w1, w2, w3 = ws
        mu1 = x @ w1.T  # fixed during inference
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
