"""Every check of a sweep file's content, in one place: key names, types, ranges, the grid, the
``search:`` and ``verify:`` sections, the judging keys (``metric``, ``mode``, ``objective``), and
the names that must be registered (algorithms, datasets).

:mod:`orchestrator.spec.config` (loading, grid expansion), :mod:`orchestrator.studies.tune_base`
(the search space and its trials) and :mod:`orchestrator.studies.verify` call these and keep only
their logic. Each problem is one :class:`BadInput` line naming the file, the key and the value
(exit 2), raised before anything is written. This module imports no other module of
``orchestrator.spec`` (``config`` imports it); the trainers are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.schema import DEFAULT_METRIC, EPOCH_METRICS, MODES, final
from orchestrator.errors import BadInput

# The per-epoch metrics a sweep may optimise (the results contract's EPOCH_METRICS), the default first.
METRICS = tuple(sorted(EPOCH_METRICS, key=lambda m: m != DEFAULT_METRIC))
BATCHED = ("auto", "on", "off")  # resources.batched
# Trainer fields tune-base cannot search: the axes, the group's identity and where it runs.
NOT_SEARCHABLE = ("width", "base_width", "parametrization", "seed", "algorithm", "device", "dtype")


# ---- names ---------------------------------------------------------------------------------
def trainer_fields() -> dict[str, dataclasses.Field]:
    """The fields of ``trainers.TrainerConfig`` by name (the keys a sweep may fix, sweep or search)."""
    from trainers import TrainerConfig

    return {f.name: f for f in dataclasses.fields(TrainerConfig)}


def suggest(key: str, valid) -> str:
    """`` (did you mean 'x'?)`` naming the valid key nearest to ``key``, or an empty string."""
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""


def check_keys(raw: Any, schema: type, where: str, src: str) -> None:
    """Unknown keys anywhere in ``raw`` (a sweep file or its overrides, checked against the dataclass
    ``schema``) are BadInput naming the key and the nearest valid one; ``trainer`` and ``grid`` keys
    must be TrainerConfig fields."""
    if not isinstance(raw, dict):
        raise BadInput(f"{src}: {where or 'top level'} must be a mapping, got {raw!r}")
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise BadInput(f"{src}: unknown key {path!r}{suggest(str(key), names)}")
        sub = names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub) and value is not None:
            check_keys(value, sub, path, src)
    for section in ("trainer", "grid"):
        if section in raw and raw[section] is not None and not where:
            if not isinstance(raw[section], dict):
                raise BadInput(f"{src}: {section} must be a mapping of trainer fields, got {raw[section]!r}")
            tf = trainer_fields()
            for key in raw[section]:
                if key not in tf:
                    raise BadInput(
                        f"{src}: unknown key '{section}.{key}' (not a TrainerConfig field){suggest(str(key), tf)}"
                    )


# ---- values of the trainer and the grid --------------------------------------------------------
def grid_values(key: str, spec: Any, src: str) -> list[Any]:
    """A grid entry's values: a list, a scalar, or ``{log2: [start, stop, step]}`` (2^k, stop included).

    Raises:
        BadInput: a mapping other than ``{log2: ...}``, or a bad log2 range.
    """
    if isinstance(spec, (DictConfig, dict)):
        spec = OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec
        if set(spec) != {"log2"}:
            raise BadInput(f"{src}: grid.{key}: a mapping must be {{log2: [start, stop, step]}}, got {spec!r}")
        r = spec["log2"]
        if (
            not isinstance(r, list)
            or len(r) not in (2, 3)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
        ):
            raise BadInput(f"{src}: grid.{key}.log2 must be [start, stop] or [start, stop, step] numbers, got {r!r}")
        start, stop, step = (list(r) + [1])[:3]
        if step <= 0:
            raise BadInput(f"{src}: grid.{key}.log2 step must be > 0, got {step!r}")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        return [float(2.0 ** (start + i * step)) for i in range(max(n, 0))]
    if isinstance(spec, (ListConfig, list)):
        return list(OmegaConf.to_container(spec) if isinstance(spec, ListConfig) else spec)
    return [spec]


def coerce(key: str, value: Any, where: str, src: str) -> Any:
    """``value`` converted to the type of TrainerConfig.``key`` (a bad type is BadInput at ``where``)."""
    from trainers import TrainerConfig

    try:
        node = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {key: value})
        return node[key]
    except OmegaConfBaseException:
        ftype = trainer_fields()[key].type
        raise BadInput(f"{src}: {where}: {value!r} is not a valid {ftype}") from None


def grid_axis(key: str, spec: Any, src: str) -> list[Any]:
    """A grid axis's distinct values, each coerced to its TrainerConfig type (an empty axis is BadInput)."""
    values = grid_values(key, spec, src)
    if not values:
        raise BadInput(f"{src}: grid.{key} is empty")
    return list(dict.fromkeys(coerce(key, v, f"grid.{key}={v!r}", src) for v in values))


def check_grid(fixed: Mapping[str, Any], grid: Mapping[str, Any], src: str) -> None:
    """A key both fixed and swept, or an empty grid, is BadInput."""
    both = sorted(set(fixed) & set(grid))
    if both:
        raise BadInput(f"{src}: key {both[0]!r} is both in trainer and in grid; keep one")
    if not grid:
        raise BadInput(f"{src}: empty grid: give at least one key, e.g. grid.lr: {{log2: [-8, 0, 1]}}")


def trainer_config(values: dict[str, Any], swept: Iterable[str], src: str):
    """``trainers.TrainerConfig(**values)``; its own refusal is BadInput naming the grid key at fault."""
    from trainers import TrainerConfig

    try:
        return TrainerConfig(**values)
    except (ValueError, TypeError) as exc:
        bad = next((f"grid.{k}" for k in swept if f"{k}=" in str(exc)), "trainer")
        raise BadInput(f"{src}: {bad}: {exc}") from None


# ---- the sections of a run -----------------------------------------------------------------------
def check_run(cfg: DictConfig, src: str) -> None:
    """The top-level ``metric`` and ``mode``, ``train``, ``data``, ``resources``, ``max_concurrent`` and
    ``max_failures`` (types are OmegaConf's, checked when the file is merged; these are the values)."""
    if cfg.mode not in MODES:
        raise BadInput(f"{src}: mode={cfg.mode!r} is not one of min, max")
    if cfg.metric not in METRICS:
        raise BadInput(f"{src}: metric={cfg.metric!r} is not one of {', '.join(METRICS)}{suggest(cfg.metric, METRICS)}")
    for key in ("epochs", "batch_size"):
        if cfg.train[key] <= 0:
            raise BadInput(f"{src}: train.{key}={cfg.train[key]!r} must be a positive integer")
    for key in ("subset", "test_subset"):
        if cfg.data[key] is not None and cfg.data[key] < 0:
            raise BadInput(f"{src}: data.{key}={cfg.data[key]!r} must be >= 0 (0 = all)")
    if cfg.resources.batched not in BATCHED:
        raise BadInput(f"{src}: resources.batched={cfg.resources.batched!r}: one of {', '.join(BATCHED)}")
    if cfg.resources.cpu < 0 or cfg.resources.gpu < 0 or (cfg.resources.cpu == 0 and cfg.resources.gpu == 0):
        raise BadInput(f"{src}: resources cpu={cfg.resources.cpu!r} gpu={cfg.resources.gpu!r}: need >= 0, not both 0")
    if cfg.max_concurrent < 0 or cfg.max_failures < 0:
        raise BadInput(f"{src}: max_concurrent and max_failures must be >= 0")


def check_device_request(devices: Iterable[str], gpu: float, src: str) -> None:
    """A trial that asks for ``cuda`` (``trainer.device``) but not for a GPU (``resources.gpu``) is
    BadInput: Ray would give it none."""
    cuda = sorted({d for d in devices if str(d).startswith("cuda")})
    if cuda and not gpu > 0:
        raise BadInput(
            f"{src}: trainer.device={cuda[0]} needs resources.gpu > 0 (Ray gives a trial a GPU "
            "only when it asks for one); or use trainer.device=auto"
        )


def check_runnable(algorithms: Iterable[str], dataset: str, src: str) -> None:
    """Checks that need the trainers and the data: an algorithm with no trainer, an unknown dataset,
    a dataset read from files whose files are missing (its registered ``check``), a bad
    ``$MUTRANSFER_MATMUL`` (the trials' product backend, ``trainers.forced_matmul``)."""
    from trainers import DATASETS, TRAINERS, DataError, dataset_entry, forced_matmul

    try:
        forced_matmul()
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    missing = sorted(a for a in set(algorithms) if a not in TRAINERS)
    if missing:
        raise BadInput(f"{src}: algorithm={missing[0]!r} has no trainer yet (available: {', '.join(sorted(TRAINERS))})")
    if dataset not in DATASETS:
        raise BadInput(
            f"{src}: data.dataset={dataset!r} is not one of {', '.join(DATASETS)}{suggest(dataset, list(DATASETS))}"
        )
    entry = dataset_entry(dataset)
    if entry.from_files and entry.check is not None:
        try:
            entry.check()
        except DataError as exc:
            raise BadInput(f"{src}: data.dataset={dataset}: {exc}") from None


# ---- judging: the objective and the verify section ----------------------------------------------
def check_objective(cfg: DictConfig, src: str) -> tuple[str, str]:
    """The resolved objective ``(final_<metric>, mode)``: ``objective.metric``/``mode``, each
    defaulting to the top-level ``metric``/``mode``.

    Raises:
        BadInput: an unknown objective metric or mode.
    """
    metric = cfg.objective.metric if cfg.objective.metric is not None else cfg.metric
    short = metric.removeprefix("final_")
    if short not in METRICS:
        valid = [f"final_{m}" for m in METRICS]
        raise BadInput(f"{src}: objective.metric={metric!r} is not one of {', '.join(valid)}{suggest(metric, valid)}")
    mode = cfg.objective.mode if cfg.objective.mode is not None else cfg.mode
    if mode not in MODES:
        raise BadInput(f"{src}: objective.mode={mode!r} is not one of min, max")
    return final(short), mode


def check_verify(cfg: DictConfig, src: str) -> None:
    """The ``verify:`` section's values: thresholds >= 0, extensions, resolution, the seed schedule, a bracket."""
    v = cfg.verify
    for key in ("max_drift", "max_regret"):
        if not v[key] >= 0:
            raise BadInput(f"{src}: verify.{key}={v[key]!r} must be >= 0")
    if int(v.max_extend) < 0:
        raise BadInput(f"{src}: verify.max_extend={v.max_extend} must be >= 0")
    if not 0 < float(v.resolution) <= 4:
        raise BadInput(f"{src}: verify.resolution={v.resolution!r} must be in (0, 4] octaves, e.g. 0.25")
    if int(v.seeds) < 1:
        raise BadInput(f"{src}: verify.seeds={v.seeds!r} must be >= 1")
    for key in ("max_seeds", "seed_step"):
        if int(v[key]) < 1:
            raise BadInput(f"{src}: verify.{key}={v[key]!r} must be >= 1")
    if int(v.max_seeds) < int(v.seeds):
        raise BadInput(
            f"{src}: verify.max_seeds={v.max_seeds} is below verify.seeds={v.seeds}: "
            "give max_seeds >= seeds (max_seeds = seeds adds none)"
        )
    if not len(v.bracket):
        raise BadInput(f"{src}: verify.bracket is empty: give log2 offsets, e.g. [-2, -1, 0, 1, 2]")


def check_verify_run(cfg: DictConfig, widths: Iterable[int], src: str) -> list[float]:
    """What ``verify`` needs beyond :func:`check_verify`: a bracket holding 0 and a width axis with two
    widths or more (``widths``: the trials' widths). Returns the bracket as floats."""
    bracket = [float(k) for k in cfg.verify.bracket]
    if 0.0 not in bracket:
        raise BadInput(f"{src}: verify.bracket={bracket} must contain 0 (the base η* itself)")
    if "width" not in cfg.grid or len(set(widths)) < 2:
        raise BadInput(f"{src}: grid.width needs at least two widths to verify a transfer")
    return bracket


# ---- the search section (tune-base) --------------------------------------------------------------
def check_search(cfg: DictConfig, src: str, trials: int | None = None) -> int:
    """``search.trials`` (or ``--trials``: ``trials``), ``search.max_concurrent`` and ``search.batch``.

    Returns:
        The COMPLETE trials per study.
    """
    n = cfg.search.trials if trials is None else trials
    if not isinstance(n, int) or n <= 0:
        raise BadInput(
            f"{'--trials' if trials is not None else src + ': search.trials'}={n!r} must be a positive integer"
        )
    if cfg.search.max_concurrent < 0:
        raise BadInput(f"{src}: search.max_concurrent={cfg.search.max_concurrent!r} must be >= 0")
    if cfg.search.batch <= 0:
        raise BadInput(f"{src}: search.batch={cfg.search.batch!r} must be a positive integer")
    return n


def search_param(name: str, spec: Any, grid: Iterable[str], src: str) -> dict[str, Any]:
    """One checked entry of ``search.space``: ``{name, type, low, high, log}`` or ``{name, type, choices}``
    (``type``: ``int``, ``float`` or ``other``; ``log`` defaults to true for ``lr`` only).

    Raises:
        BadInput: an unknown or unsearchable key, a key that is also a grid axis (``lr`` may be), a
            malformed entry, or a bad range.
    """
    where = f"{src}: search.space.{name}"
    fields = trainer_fields()
    if name not in fields:
        raise BadInput(f"{where}: not a TrainerConfig field{suggest(str(name), fields)}")
    if name in NOT_SEARCHABLE:
        raise BadInput(f"{where}: {name} cannot be searched (searchable: any other TrainerConfig field)")
    if name != "lr" and name in grid:
        raise BadInput(f"{where}: {name} is also a grid axis; keep one")
    ftype = str(fields[name].type)
    kind = "int" if ftype in ("int", "<class 'int'>") else "float" if ftype in ("float", "<class 'float'>") else "other"
    if not isinstance(spec, dict):
        raise BadInput(f"{where}: expected {{low, high, log}} or {{choices: [...]}}, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise BadInput(f"{where}: choices must be a non-empty list and alone, got {spec!r}")
        return {"name": name, "type": kind, "choices": spec["choices"]}
    extra = set(spec) - {"low", "high", "log"}
    if extra or not {"low", "high"} <= set(spec):
        raise BadInput(f"{where}: expected keys low, high (and log), got {sorted(spec)}")
    if kind == "other":
        raise BadInput(f"{where}: {name} is a {ftype} field: give choices: [...]")
    low, high, log = spec["low"], spec["high"], spec.get("log", name == "lr")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not isinstance(
        log, bool
    ):
        raise BadInput(f"{where}: low and high must be numbers and log a boolean, got {spec!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
        raise BadInput(f"{where}: need finite low < high{' and low > 0 (log)' if log else ''}, got {spec!r}")
    return {"name": name, "type": kind, "low": low, "high": high, "log": log}
