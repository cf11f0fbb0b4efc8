"""Parametrization tables as YAML files: what ``derive --out`` writes and ``$MUTRANSFER_TABLES`` loads.

A file holds one table and the registry key it replaces or adds::

    algorithm: pc
    key: [mup, sgd, -1.0]        # what the algorithm's key_of(cfg) returns, as a list
    name: pc/derived/sgd
    input:  {init_var: 0.0, multiplier: 0.0, lr: 0.0}
    hidden: {init_var: 0.0, multiplier: 0.0, lr: -1.0}
    output: {init_var: -1.0, multiplier: 0.0, lr: -2.0, bias_lr: -1.0}   # bias_lr optional
    extras: {gamma_hidden: 0.0, gamma_output: 1.0, inference_lr: 0.0}

:func:`load_table_file` registers it with ``register_table``, so ``coord-check``, ``train``,
``sweep`` and ``verify`` of that key use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType

import yaml

from . import _param
from ._config import TrainerConfig
from ._param import ROLES, LayerRule, Table, register_table

RULE_FIELDS = ("init_var", "multiplier", "lr")
OPTIONAL_FIELDS = ("bias_lr",)  # absent: the bias follows the input row (LayerRule.bias_lr = None)


class TableFileError(ValueError):
    """A table file that cannot be read: the message is one line naming the file, key and value."""


def table_key(cfg: TrainerConfig) -> tuple:
    """The registry key of ``cfg`` (the algorithm's ``key_of``, else (parametrization, optimizer))."""
    return tuple(_param._KEYS.get(cfg.algorithm, _param.default_key)(cfg))


def table_to_dict(algorithm: str, key: tuple, table: Table) -> dict:
    """The YAML document of ``table`` registered as (``algorithm``, ``key``)."""
    doc = {"algorithm": algorithm, "key": [k if isinstance(k, str) else float(k) for k in key], "name": table.name}
    for role in ROLES:
        rule = table.rule(role)
        doc[role] = {f: float(getattr(rule, f)) + 0.0 for f in RULE_FIELDS}
        doc[role].update({f: float(getattr(rule, f)) + 0.0 for f in OPTIONAL_FIELDS if getattr(rule, f) is not None})
    doc["extras"] = {k: float(v) + 0.0 for k, v in table.extras.items()}
    return doc


def write_table_file(path: str | Path, algorithm: str, key: tuple, table: Table, comment: str = "") -> Path:
    """Write the table as YAML (``comment`` lines first, as ``#`` comments)."""
    path = Path(path)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    text = head + yaml.safe_dump(table_to_dict(algorithm, key, table), sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _number(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TableFileError(f"{where}={value!r} must be a finite number")
    return float(value)


def parse_table(doc, where: str) -> tuple[str, tuple, Table]:
    """(algorithm, key, table) from a loaded YAML document; ``where`` names the file in errors."""
    if not isinstance(doc, dict):
        raise TableFileError(f"{where}: expected a mapping with algorithm, key, input, hidden, output")
    allowed = {"algorithm", "key", "name", "extras", *ROLES}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise TableFileError(f"{where}: {unknown[0]}: unknown key; valid: {', '.join(sorted(allowed))}")
    for k in ("algorithm", "key", *ROLES):
        if k not in doc:
            raise TableFileError(f"{where}: {k}: missing")
    algorithm, key = doc["algorithm"], doc["key"]
    if not isinstance(algorithm, str) or not algorithm:
        raise TableFileError(f"{where}: algorithm={algorithm!r} must be a name")
    if not isinstance(key, list) or not key or not all(isinstance(k, (str, int, float)) for k in key):
        raise TableFileError(f"{where}: key={key!r} must be a list such as [mup, sgd]")
    key = tuple(k if isinstance(k, str) else float(k) for k in key)
    shipped = list(_param._TABLES.get(algorithm, {}))
    if shipped and len(shipped[0]) != len(key):
        raise TableFileError(
            f"{where}: key={list(key)!r} is not shaped like {algorithm}'s keys (e.g. {list(shipped[0])!r})"
        )
    rows = {}
    for role in ROLES:
        row = doc[role]
        if not isinstance(row, dict) or set(row) - set(RULE_FIELDS) - set(OPTIONAL_FIELDS):
            raise TableFileError(
                f"{where}: {role}={row!r} must map {', '.join(RULE_FIELDS + OPTIONAL_FIELDS)} to numbers"
            )
        fields = {f: _number(f"{where}: {role}.{f}", row.get(f, 0.0)) for f in RULE_FIELDS}
        fields.update({f: _number(f"{where}: {role}.{f}", row[f]) for f in OPTIONAL_FIELDS if f in row})
        rows[role] = LayerRule(**fields)
    extras = doc.get("extras") or {}
    if not isinstance(extras, dict):
        raise TableFileError(f"{where}: extras={extras!r} must be a mapping")
    extras = {str(k): _number(f"{where}: extras.{k}", v) for k, v in extras.items()}
    name = str(doc.get("name") or f"{algorithm}/{'/'.join(map(str, key))}")
    return algorithm, key, Table(name, rows["input"], rows["hidden"], rows["output"], MappingProxyType(extras))


def load_table_file(path: str | Path) -> tuple[str, tuple, Table]:
    """Read a table file and register it (``register_table``); returns (algorithm, key, table)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TableFileError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise TableFileError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    algorithm, key, table = parse_table(doc, str(path))
    register_table(algorithm, key, table)
    return algorithm, key, table
