"""Parametrizations as data: width exponents per layer role, relative to base_width.

Every number in a table is an exponent e of the width multiplier m = width / base_width:

    init variance    Var W_l = m^init_var / fan_in
    forward mult.    h_l = m^multiplier · W_l φ(h_{l−1})
    learning rate    η_l = η · m^lr
    bias lr          η_b = η · m^bias_lr   (the bias of a layer of that role)

At m = 1 every table gives the same network and the same learning rate, so a
learning rate tuned at the base width means the same thing in every table.
Tables for PC and TP live beside their trainers (``_pc.py``, ``_tp.py``) and are
registered here with :func:`register_table`; ``extras`` holds their other
exponents (energy weights γ_l, target step β, feedback learning rate, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._config import TrainerConfig

ROLES = ("input", "hidden", "output")


@dataclass(frozen=True)
class LayerRule:
    """Width exponents of one layer role.

    ``bias_lr`` is the learning-rate exponent of the role's bias (biases start at zero). Tensor
    Programs V treats a bias like an input weight, whose SGD learning rate is ∝ fan-out: the input
    and hidden layers' biases (fan-out = width) take the input row's exponent, the output bias
    (fan-out = the output dimension) one less; under Adam every bias is m⁰. ``None`` (the default,
    for tables written before bias rows existed) means "the input row's ``lr``".
    """

    init_var: float = 0.0
    multiplier: float = 0.0
    lr: float = 0.0
    bias_lr: float | None = None


@dataclass(frozen=True)
class Table:
    """A parametrization: one :class:`LayerRule` per role, plus named extra exponents."""

    name: str
    input: LayerRule
    hidden: LayerRule
    output: LayerRule
    extras: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def rule(self, role: str) -> LayerRule:
        """The rule of a role (``input``, ``hidden`` or ``output``)."""
        if role not in ROLES:
            raise ValueError(f"role={role!r} is not one of {', '.join(ROLES)}")
        return getattr(self, role)

    def bias_lr(self, role: str) -> float:
        """The bias learning-rate exponent of a role (the input row's ``lr`` when the row sets none)."""
        own = self.rule(role).bias_lr
        return float(self.input.lr if own is None else own)

    def extra(self, key: str) -> float:
        """A named extra exponent (0 when the table does not set it)."""
        return float(self.extras.get(key, 0.0))


def layer_roles(depth: int) -> list[str]:
    """Roles of ``layers.0 .. layers.{depth-1}``: input, hidden..., output."""
    return ["input"] + ["hidden"] * (depth - 2) + ["output"]


SP = LayerRule()

# (algorithm) -> function(cfg) -> key, and key -> Table
_TABLES: dict[str, dict[tuple, Table]] = {}
_KEYS: dict[str, callable] = {}


def default_key(cfg: TrainerConfig) -> tuple[str, str]:
    """The table key of an algorithm that registered no ``key_of``: (parametrization, optimizer)."""
    return (cfg.parametrization, cfg.optimizer)


def register_table(algorithm: str, key: tuple, table: Table, key_of=None) -> None:
    """Register ``table`` for ``algorithm`` under ``key``.

    ``key_of(cfg)`` (given once per algorithm) maps a config to its key; without one the key is
    ``(parametrization, optimizer)`` (:func:`default_key`).
    """
    _TABLES.setdefault(algorithm, {})[key] = table
    if key_of is not None:
        _KEYS[algorithm] = key_of


def resolve_table(cfg: TrainerConfig) -> Table:
    """The parametrization table of a config; the error lists the valid keys."""
    if cfg.algorithm not in _TABLES:
        raise ValueError(
            f"algorithm={cfg.algorithm!r} has no parametrization tables; "
            f"give them with register_table({cfg.algorithm!r}, (parametrization, optimizer), table)"
        )
    key = _KEYS.get(cfg.algorithm, default_key)(cfg)
    tables = _TABLES[cfg.algorithm]
    if key not in tables:
        valid = ", ".join(str(k) for k in tables)
        raise ValueError(f"no {cfg.algorithm} table for {key}; valid: {valid}")
    return tables[key]
