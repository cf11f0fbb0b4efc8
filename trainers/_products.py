"""The dense matrix products of every trainer, on the fastest exact backend for this CPU and shape.

Four products cover the trainers (forward passes, PC's inference, weight gradients, TP's
feedback maps); every dense layer computes them through this module:

    linear(a, w, b)         a wᵀ (+ b)          (forward; ``Dense.forward``)
    matmul(e, w)            e w                 (the adjoint in the input; ``Dense.transpose``)
    outer(e, a, s)          s · eᵀ a            (weight gradients; ``Dense.weight_grad``)
    residual(x, a, w, α)    x − α · a wᵀ        (PC's error; ``Dense.residual``)

Backends (a table, not branches): ``torch``, torch's own dispatch (MKL's sgemm on this CPU, cuBLAS
on CUDA), and ``onednn``, the same fp32 product by oneDNN (``torch.ops.mkldnn._linear_pointwise``,
bundled with torch), which ran 1.8–2.2× faster than MKL at 128 × 1024 × 1024 on an AMD EPYC with
AVX-512 (benchmarks/NOTES.md). Both compute in fp32 with fp32 accumulation (oneDNN's default
``fp32`` math mode; no TF32 or bf16): within 1e-6 relative of a float64 product at these sizes.

``MUTRANSFER_MATMUL`` chooses: ``auto`` (the default) times both backends on the first call of each
(product, shape, thread count) of this process, 3 calls each after a warm-up, and keeps the faster
(cached); ``torch`` or ``onednn`` forces one. Only float32 tensors on the CPU, outside autograd, have
a choice: float64 and CUDA tensors, and products that autograd must differentiate, always take
torch's own path, unchanged. :func:`used` says which backends the products took since
:func:`reset_used`; ``trainers.train`` puts it in every history row (``matmul_backend``).

Prepacking the weights into oneDNN's blocked layout was measured and not kept: a reorder of a
1024 × 1024 weight costs 0.43 ms, and an unpacked (plain strided) weight ran as fast as a packed one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

ENV = "MUTRANSFER_MATMUL"
CHOICES = ("auto", "torch", "onednn")


def _onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _lp(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's fp32 inner-product primitive: a wᵀ + b for 2-d a (any strides) and w (out × in)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


def _torch_outer(e: torch.Tensor, a: torch.Tensor, s: float) -> torch.Tensor:
    if s == 1.0:
        return torch.mm(e.t(), a)
    return torch.addmm(e.new_zeros(()), e.t(), a, beta=0.0, alpha=s)


# backend -> product -> implementation. Every entry computes the same fp32 function.
BACKENDS: dict[str, dict[str, Callable]] = {
    "torch": {
        "linear": lambda a, w, b=None: F.linear(a, w, b),
        "matmul": lambda e, w: torch.mm(e, w),
        "outer": _torch_outer,
        "residual": lambda x, a, w, alpha: torch.addmm(x, a, w.t(), alpha=-alpha),
    },
    "onednn": {
        "linear": _lp,
        "matmul": lambda e, w: _lp(e, w.t()),
        "outer": lambda e, a, s: _lp(e.t() if s == 1.0 else e.mul(s).t(), a.t()),  # scale the small operand
        "residual": lambda x, a, w, alpha: torch.sub(x, _lp(a, w), alpha=alpha),
    },
}

_chosen: dict[tuple, str] = {}  # (product, shapes, threads) -> backend, for this process
_used: set[str] = set()
_override: list[str] = []  # set by using(): benchmarks time two backends in one process


@contextmanager
def using(name: str) -> Iterator[None]:
    """Force backend ``name`` (``auto``, ``torch``, ``onednn``) inside the block, over ``$MUTRANSFER_MATMUL``."""
    if name not in CHOICES:
        raise ValueError(f"backend {name!r} is not one of {', '.join(CHOICES)}")
    _override.append(name)
    try:
        yield
    finally:
        _override.pop()


def forced() -> str:
    """``$MUTRANSFER_MATMUL`` (``auto`` when unset) or :func:`using`'s; ValueError naming it if invalid."""
    value = _override[-1] if _override else (os.environ.get(ENV, "auto").strip() or "auto")
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r} is not one of {', '.join(CHOICES)}")
    if value == "onednn" and not _onednn_available():
        raise ValueError(f"{ENV}=onednn, but this torch build has no oneDNN (torch.backends.mkldnn)")
    return value


def _has_choice(first: torch.Tensor, args: tuple) -> bool:
    """fp32 on the CPU, and no autograd graph to build (oneDNN's op has no derivative)."""
    if first.dtype != torch.float32 or first.device.type != "cpu" or not _onednn_available():
        return False
    return not (torch.is_grad_enabled() and any(torch.is_tensor(t) and t.requires_grad for t in (first, *args)))


def _time(fn: Callable, args: tuple) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def _pick(op: str, args: tuple) -> str:
    """The backend of ``op`` on operands shaped like ``args``: forced, cached, or measured now."""
    mode = forced()
    if mode != "auto":
        return mode
    key = (op, tuple(tuple(t.shape) if torch.is_tensor(t) else None for t in args), torch.get_num_threads())
    if key not in _chosen:
        fns = {name: table[op] for name, table in BACKENDS.items()}
        for fn in fns.values():  # warm-up: oneDNN builds and caches its primitive on the first call
            fn(*args)
        times = {name: 0.0 for name in fns}
        for _ in range(2):  # alternate, so a slow phase of a shared machine falls on both
            for name, fn in fns.items():
                times[name] += _time(fn, args)
        _chosen[key] = min(times, key=times.get)
    return _chosen[key]


def _call(op: str, first: torch.Tensor, *args):
    name = _pick(op, (first, *args)) if _has_choice(first, args) else "torch"
    _used.add(name)
    return BACKENDS[name][op](first, *args)


def linear(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """a wᵀ (+ b) for a 2-d ``a`` (batch × in) and ``w`` (out × in)."""
    return _call("linear", a, w, b)


def matmul(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e w for a 2-d ``e`` (batch × out) and ``w`` (out × in)."""
    return _call("matmul", e, w)


def outer(e: torch.Tensor, a: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """scale · eᵀ a for ``e`` (batch × out) and ``a`` (batch × in): an out × in weight gradient."""
    return _call("outer", e, a, float(scale))


def residual(x: torch.Tensor, a: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """x − α · a wᵀ (a new tensor) for ``x`` (batch × out), ``a`` (batch × in), ``w`` (out × in)."""
    return _call("residual", x, a, w, float(alpha))


def used() -> str:
    """The backends the products took since :func:`reset_used` (``trainers.train`` calls it at its
    start), sorted and joined by ``+``: ``onednn``, ``torch`` or ``onednn+torch`` (``""``: none yet).

    Both backends follow torch's float32 matmul precision, which this package never changes; if the
    caller lowered it (``torch.set_float32_matmul_precision``), the record says so.
    """
    text = "+".join(sorted(_used))
    precision = torch.get_float32_matmul_precision()
    return f"{text} (float32 matmul precision {precision})" if text and precision != "highest" else text


def note_used(name: str) -> None:
    """Record that products outside this module ran on backend ``name`` (the stacked trainers'
    batched matmuls, ``trainers._stacked``, are torch's own)."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    _used.add(name)


def reset_used() -> None:
    """Start a new record of :func:`used` (the measured choices stay cached)."""
    _used.clear()


def reset() -> None:
    """Forget the measured choices and the backends used (tests, benchmarks)."""
    _chosen.clear()
    _used.clear()
