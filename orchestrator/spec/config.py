"""Sweep configuration: an OmegaConf schema, YAML + dotlist loading, grid expansion, trial ids.

A sweep file looks like::

    name: bp_mlp_fmnist
    trainer: {algorithm: bp, depth: 3, activation: tanh, base_width: 64}
    data: {dataset: fmnist, subset: 10000, test_subset: 2000}
    train: {epochs: 10, batch_size: 128}
    grid:
      parametrization: [sp, mup]
      width: [64, 128, 256, 512, 1024]
      lr: {log2: [-10, 2, 1]}          # 2^-10, 2^-9, ..., 2^2
      seed: [0, 1]
    objective: {metric: final_train_loss, mode: min}   # what "optimal" means
    verify: {max_drift: 0.2, max_regret: 0.05}        # the transfer verdict's thresholds
    resources: {cpu: 1, gpu: 0}
    tracking: {uri: null, experiment: null}           # MLflow; default sqlite:///<results>/mlflow.db

Every problem is a :class:`BadInput` naming the file and key, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.schema import DEFAULT_METRIC, DEFAULT_MODE, EPOCH_METRICS, MODES, final
from orchestrator.errors import BadInput
from orchestrator.stores.paths import check_name

# The per-epoch metrics a sweep may optimise (the results contract's EPOCH_METRICS), test loss first.
METRICS = tuple(sorted(EPOCH_METRICS, key=lambda m: m != DEFAULT_METRIC))


@dataclass
class DataSection:
    """Which dataset, and how much of it (first N/10 per class for Fashion-MNIST; 0 = all)."""

    dataset: str = "fmnist"
    subset: int | None = 10000
    test_subset: int | None = 2000


@dataclass
class TrainSection:
    """The training loop of every trial."""

    epochs: int = 10
    batch_size: int = 128


BATCHED = ("auto", "on", "off")


@dataclass
class Resources:
    """Per-trial Ray resources (fractional GPUs allowed); a pack (trials that share their set-up) takes one
    trial's. ``batched``: train a pack's members as one stacked model (``trainers.train_batched``, equal to
    member by member to fp32 rounding): ``auto`` on CUDA only (on CPU packs stay bit-identical), ``on``
    wherever ``trainers.batchable`` allows, ``off`` never."""

    cpu: float = 1.0
    gpu: float = 0.0
    batched: str = "auto"


@dataclass
class Tracking:
    """MLflow: ``uri`` (default ``$MLFLOW_TRACKING_URI`` or SQLite at ``<results>/mlflow.db``)."""

    uri: str | None = None
    experiment: str | None = None


@dataclass
class Objective:
    """What "optimal" means for tune-base and the analysis; unset fields follow the top-level metric/mode."""

    metric: str | None = None  # final_train_loss, final_test_loss, final_test_acc (or without final_)
    mode: str | None = None  # min or max


@dataclass
class VerifySection:
    """Thresholds of the transfer verdict, the log2 learning-rate bracket around the base η*, and the seeds (verify)."""

    max_drift: float = 0.2
    max_regret: float = 0.05
    bracket: list[float] = field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    # When a width's best lr is at an end of its bracket (and the next point is not known to
    # diverge), extend the bracket there by one spacing, at most this many times per side.
    max_extend: int = 4
    # Halve the log2 spacing around each (width, seed) optimum and stability edge down to this.
    resolution: float = 0.25
    # Seeds per grid point when the grid has no seed axis (0, 1, ..., seeds - 1).
    seeds: int = 3
    # Adaptive seeding: a group still undecided after the refinement (inconclusive, or an SP control
    # that does not drift while its muP twin transfers on its own) gets seed_step more seeds, look
    # after look, up to max_seeds seeds in all (seeds continue from the largest grid.seed + 1 when
    # the grid has a seed axis). Each look's intervals are at 1 - 0.05 / looks (analysis.stats);
    # max_seeds = seeds: one look, no seeds added.
    max_seeds: int = 8
    seed_step: int = 3
    # Extend upwards until a learning rate diverges, so the stability edge η_max can be located.
    find_edge: bool = True


@dataclass
class SearchSection:
    """Optuna at the base width (tune-base): ``space`` maps a trainer field to ``{low, high, log}``
    or ``{choices: [...]}`` (empty: lr over the grid's lr range, log); the study lives in ``storage``
    (an SQLAlchemy URL, default SQLite at ``<results>/<name>/optuna.db``; ``journal:PATH`` or ``journal``
    for Optuna's journal file on a shared file system: :mod:`orchestrator.stores.study_storage`).

    The search runs in rounds (:mod:`orchestrator.studies.base_study`): each study still short of ``trials``
    COMPLETE trials asks ``batch`` suggestions at once (fewer when it needs fewer), and the round's
    suggestions of all groups run together. A larger batch keeps more workers busy; a smaller one lets
    each suggestion see more results. ``seed`` seeds every group's sampler (per group and round)."""

    space: dict[str, Any] = field(default_factory=dict)
    trials: int = 20
    storage: str | None = None
    seed: int = 0
    max_concurrent: int = 0
    batch: int = 4


@dataclass
class SweepConfig:
    """A sweep: fixed trainer fields, a grid over any trainer field, data, loop, and execution."""

    name: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    metric: str = DEFAULT_METRIC
    mode: str = DEFAULT_MODE
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 0
    max_failures: int = 2
    tracking: Tracking = field(default_factory=Tracking)
    objective: Objective = field(default_factory=Objective)
    verify: VerifySection = field(default_factory=VerifySection)
    search: SearchSection = field(default_factory=SearchSection)
    plugins: list[str] = field(default_factory=list)  # modules that register algorithms/datasets (plugins.py)


# Keys that say how a sweep runs (or is judged), not what its trials compute: they may change between runs.
# (``metric``/``mode`` say how trials are judged, not what they compute: a sweep recorded before the
# default objective became the training loss still resumes.)
EXECUTION_KEYS = (
    "resources",
    "max_concurrent",
    "max_failures",
    "tracking",
    "objective",
    "verify",
    "search",
    "plugins",
    "metric",
    "mode",
)


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its id, its full trainer config (as a dict), data and loop settings."""

    trial_id: str
    trainer: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    swept: tuple[str, ...]

    @functools.cached_property
    def config(self):
        """The typed ``trainers.TrainerConfig`` (built once; the grid's expansion hands its own over)."""
        from trainers import TrainerConfig

        return TrainerConfig(**self.trainer)

    def to_dict(self) -> dict[str, Any]:
        """The plain form handed to Ray (a worker builds its own TrainerConfig from it)."""
        return {
            "trial_id": self.trial_id,
            "trainer": dict(self.trainer),
            "data": dict(self.data),
            "train": dict(self.train),
            "swept": list(self.swept),
        }


@dataclass
class Sweep:
    """A validated sweep: its config, the file it came from, and its trials."""

    name: str
    source: str
    config: DictConfig
    trials: list[TrialSpec]

    @property
    def swept_keys(self) -> tuple[str, ...]:
        return tuple(self.config.grid.keys())

    def identity(self) -> dict[str, Any]:
        """The part of the config that decides what is computed (execution keys left out)."""
        c = OmegaConf.to_container(self.config, resolve=True)
        return {k: v for k, v in c.items() if k not in EXECUTION_KEYS}


# ---- a recorded sweep growing --------------------------------------------------------
GROWABLE = ("trainer", "grid")  # identity sections whose change may only add or drop grid points


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """``(dotted key, old value, new value)`` of the first difference, or None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return None
    return None if old == new else (path or "config", old, new)


def _axis(section: dict, fixed: dict, key: str, src: str) -> tuple[str, list[Any]]:
    """Where ``key`` stands in a config and its values: ``grid.key`` (coerced grid values),
    ``trainer.key`` (its fixed value) or ``key`` with TrainerConfig's default."""
    if key in section:
        values = [_coerce(key, v, f"grid.{key}={v!r}", src) for v in _grid_values(key, section[key], src)]
        return f"grid.{key}", values
    if key in fixed:
        return f"trainer.{key}", [_coerce(key, fixed[key], f"trainer.{key}", src)]
    f = trainer_fields()[key]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return f"{key} (the default)", [default]


def identity_change(old: dict[str, Any], new: dict[str, Any], src: str = "sweep.yaml") -> str | None:
    """The first change from the recorded identity ``old`` to ``new`` (:meth:`Sweep.identity`) that
    changes what a recorded trial is, in words (``train.epochs=3 (was 2)``); None when ``new`` only
    grows or narrows the grid.

    Allowed: new or dropped values of a grid axis; a new grid axis whose values include the old
    fixed (or default) value; a grid axis fixed at one of its old values. Anything else (a fixed
    trainer key, ``data``, ``train``, the name) must be equal.
    """
    rest = _first_difference(
        {k: v for k, v in old.items() if k not in GROWABLE}, {k: v for k, v in new.items() if k not in GROWABLE}
    )
    if rest is not None:
        return f"{rest[0]}={rest[2]!r} (was {rest[1]!r})"
    old_grid, new_grid = dict(old.get("grid") or {}), dict(new.get("grid") or {})
    old_fixed, new_fixed = dict(old.get("trainer") or {}), dict(new.get("trainer") or {})
    fields = trainer_fields()
    for key in sorted(set(old_grid) | set(new_grid) | set(old_fixed) | set(new_fixed), key=str):
        if key in old_grid and key in new_grid:
            continue  # an axis grows or shrinks: its other points are other trials
        if key not in fields:  # not a trainer field (load_sweep refuses it): compare as written
            a, b = old_fixed.get(key, old_grid.get(key)), new_fixed.get(key, new_grid.get(key))
            if a != b:
                return f"trainer.{key}={b!r} (was {a!r})"
            continue
        was, old_values = _axis(old_grid, old_fixed, key, src)
        now, new_values = _axis(new_grid, new_fixed, key, "the new config")
        if key in new_grid:  # fixed -> axis: the recorded trials are the axis's points at the old value
            if old_values[0] not in new_values:
                return f"{now}={new_values!r} leaves out {old_values[0]!r}, the recorded trials' {was}"
        elif key in old_grid:  # axis -> fixed: this run is the recorded points at that value
            if new_values[0] not in old_values:
                return f"{now}={new_values[0]!r} is not one of the recorded {was}={old_values!r}"
        elif old_values != new_values:
            return f"trainer.{key}={new_values[0]!r} (was {old_values[0]!r})"
    return None


# ---- loading -----------------------------------------------------------------------
def trainer_fields() -> dict[str, dataclasses.Field]:
    """The fields of ``trainers.TrainerConfig`` by name (the keys a sweep may fix, sweep or search)."""
    from trainers import TrainerConfig

    return {f.name: f for f in dataclasses.fields(TrainerConfig)}


def suggest(key: str, valid) -> str:
    """`` (did you mean 'x'?)`` naming the valid key nearest to ``key``, or an empty string."""
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _check_keys(raw: dict, schema: type, where: str, src: str) -> None:
    """Unknown keys anywhere in ``raw`` are BadInput naming the key and the nearest valid one."""
    if not isinstance(raw, dict):
        raise BadInput(f"{src}: {where or 'top level'} must be a mapping, got {raw!r}")
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise BadInput(f"{src}: unknown key {path!r}{suggest(str(key), names)}")
        sub = names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub) and value is not None:
            _check_keys(value, sub, path, src)
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


def _exc_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _override_hint(value: str) -> str:
    """A likely fix of a dotlist value YAML could not parse (a flow-style colon with no space after it)."""
    if re.search(r"[{,]\s*[^\s:{}\[\],]+:[^\s]", value):
        fixed = re.sub(r"(?<![:\s]):(?=\S)", ": ", value)
        fixed = re.sub(r",(?=\S)", ", ", fixed)
        return f"; in YAML flow style a colon needs a space after it: {fixed}"
    if value.count("[") != value.count("]") or value.count("{") != value.count("}"):
        return "; a bracket is not closed (quote the whole override for the shell: 'key=[a, b]')"
    return ""


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` dotlist overrides as a nested dict (values are YAML).

    Raises:
        BadInput: one override YAML or OmegaConf cannot parse; the message names it and the likely fix.
    """
    for ov in overrides:  # one at a time first, so that the message names the override at fault
        try:
            OmegaConf.from_dotlist([ov])
        except (OmegaConfBaseException, yaml.YAMLError, ValueError) as exc:
            value = ov.split("=", 1)[1] if "=" in ov else ov
            raise BadInput(f"override {ov!r}: {_exc_line(exc)}{_override_hint(value)}") from None
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as exc:
        raise BadInput(f"override {' '.join(overrides)!r}: {_exc_line(exc)}") from None


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read ``path``, merge ``key=value`` overrides, validate, and expand the grid.

    Raises:
        BadInput: a missing file, YAML syntax error, unknown key, wrong type or value,
            an empty grid, or an unknown dataset; the message names the file and key.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise BadInput(f"{src}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or _exc_line(exc)
        raise BadInput(f"{src}:{where}: YAML syntax error: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{src}: cannot read ({exc})") from None
    raw = {} if raw is None else raw
    _check_keys(raw, SweepConfig, "", src)
    dot = parse_overrides(overrides)
    _check_keys(dot, SweepConfig, "", "override")
    # An override replaces a grid entry (list or log2 range) whole, and moves a key between trainer
    # and grid: grid.depth=[3,4] over the file's trainer.depth: 3 makes depth an axis (a sweep grows).
    given = {k for section in ("grid", "trainer") if isinstance(dot.get(section), dict) for k in dot[section]}
    for section in ("grid", "trainer"):
        if given and isinstance(raw.get(section), dict):
            raw[section] = {k: v for k, v in raw[section].items() if k not in given}
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw, dot)
    except (OmegaConfBaseException, TypeError) as exc:
        key = getattr(exc, "full_key", None)
        raise BadInput(f"{src}: {('key ' + repr(key) + ': ') if key else ''}{_exc_line(exc)}") from None
    name = (
        check_name(cfg.name, f"{src}: name")
        if cfg.name is not None
        else check_name(path.stem, f"{src}: name (from the file name; set name=...)")
    )
    cfg.name = name
    from orchestrator.spec.plugins import import_plugins

    import_plugins(cfg.plugins, f"{src}: plugins")  # before expansion: their algorithms and datasets validate
    trials = expand(cfg, src)
    resolve_judging(cfg, src)
    from orchestrator.engine.preflight import check_device_request

    check_device_request((t.trainer["device"] for t in trials), float(cfg.resources.gpu), src)
    return Sweep(name=name, source=src, config=cfg, trials=trials)


# ---- validation and grid expansion ----------------------------------------------------
def _grid_values(key: str, spec: Any, src: str) -> list[Any]:
    """A grid entry: a list, a scalar, or ``{log2: [start, stop, step]}`` (2^k, stop included)."""
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


def _coerce(key: str, value: Any, where: str, src: str) -> Any:
    """Convert ``value`` to the type of TrainerConfig.``key`` (bad types are BadInput)."""
    from trainers import TrainerConfig

    try:
        node = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {key: value})
        return node[key]
    except OmegaConfBaseException:
        ftype = trainer_fields()[key].type
        raise BadInput(f"{src}: {where}: {value!r} is not a valid {ftype}") from None


def trial_id(trainer: dict, data: dict, train: dict) -> str:
    """Deterministic id: the first 12 hex digits of the SHA-256 of the resolved trial config.

    ``device: auto`` (the default) hashes as ``cpu``, the default before it: results recorded
    then keep their ids (auto computes the same trial wherever it runs; ``device_used`` says where).
    """
    if trainer.get("device") == "auto":
        trainer = {**trainer, "device": "cpu"}
    blob = json.dumps({"trainer": trainer, "data": data, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def searched_spec(template: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The trial (``TrialSpec.to_dict()`` form) of ``template`` with ``params`` set; its id hashes its config.

    Computed identically in the worker and the driver, so both name the trial the same.
    """
    from trainers import TrainerConfig

    trainer = dataclasses.asdict(TrainerConfig(**{**template["trainer"], **params}))
    return {
        "trial_id": trial_id(trainer, template["data"], template["train"]),
        "trainer": trainer,
        "data": dict(template["data"]),
        "train": dict(template["train"]),
        "swept": list(template["swept"]),
    }


def expand(cfg: DictConfig, src: str = "<config>") -> list[TrialSpec]:
    """All trials of the grid (cartesian product), each validated as a TrainerConfig."""
    from trainers import TrainerConfig

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
    fixed = {k: _coerce(k, v, f"trainer.{k}", src) for k, v in cfg.trainer.items()}
    both = sorted(set(fixed) & set(cfg.grid))
    if both:
        raise BadInput(f"{src}: key {both[0]!r} is both in trainer and in grid; keep one")
    if not cfg.grid:
        raise BadInput(f"{src}: empty grid: give at least one key, e.g. grid.lr: {{log2: [-8, 0, 1]}}")
    axes: list[tuple[str, list]] = []
    for key, spec in cfg.grid.items():
        values = _grid_values(key, spec, src)
        if not values:
            raise BadInput(f"{src}: grid.{key} is empty")
        coerced = [_coerce(key, v, f"grid.{key}={v!r}", src) for v in values]
        axes.append((key, list(dict.fromkeys(coerced))))
    data = dict(OmegaConf.to_container(cfg.data))
    train = dict(OmegaConf.to_container(cfg.train))
    swept = tuple(k for k, _ in axes)
    trials: dict[str, TrialSpec] = {}  # by id: grid.device [cpu, auto] names one trial
    for combo in itertools.product(*(v for _, v in axes)):
        values = {**fixed, **dict(zip(swept, combo))}
        try:
            tc = TrainerConfig(**values)
        except (ValueError, TypeError) as exc:
            bad = next((f"grid.{k}" for k in swept if f"{k}=" in str(exc)), "trainer")
            raise BadInput(f"{src}: {bad}: {exc}") from None
        trainer = dataclasses.asdict(tc)
        tid = trial_id(trainer, data, train)
        if tid not in trials:
            trials[tid] = TrialSpec(tid, trainer, data, train, swept)
            trials[tid].__dict__["config"] = tc  # cached_property's slot: the config built once
    return list(trials.values())


def check_runnable(sweep: Sweep) -> None:
    """Checks that need the trainers and the data: an algorithm with no trainer, an unknown dataset,
    a dataset read from files whose files are missing (its registered ``check``), a bad
    ``$MUTRANSFER_MATMUL`` (the trials' product backend, ``trainers.forced_matmul``)."""
    from trainers import DATASETS, TRAINERS, DataError, dataset_entry, forced_matmul

    try:
        forced_matmul()
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    algos = sorted({t.trainer["algorithm"] for t in sweep.trials})
    missing = [a for a in algos if a not in TRAINERS]
    if missing:
        raise BadInput(
            f"{sweep.source}: algorithm={missing[0]!r} has no trainer yet (available: {', '.join(sorted(TRAINERS))})"
        )
    name = sweep.config.data.dataset
    if name not in DATASETS:
        raise BadInput(
            f"{sweep.source}: data.dataset={name!r} is not one of {', '.join(DATASETS)}{suggest(name, list(DATASETS))}"
        )
    entry = dataset_entry(name)
    if entry.from_files and entry.check is not None:
        try:
            entry.check()
        except DataError as exc:
            raise BadInput(f"{sweep.source}: data.dataset={name}: {exc}") from None


def to_yaml(sweep: Sweep) -> str:
    """The resolved config as YAML (what goes to ``results/<sweep>/sweep.yaml``)."""
    return OmegaConf.to_yaml(sweep.config)


def resolve_judging(cfg: DictConfig, src: str = "<config>") -> None:
    """Fill and check ``objective`` (default: ``final_<metric>``, ``mode``) and ``verify`` in place.

    Raises:
        BadInput: an unknown objective metric or mode, a negative threshold, an empty bracket.
    """
    metric = cfg.objective.metric if cfg.objective.metric is not None else cfg.metric
    short = metric.removeprefix("final_")
    if short not in METRICS:
        valid = [f"final_{m}" for m in METRICS]
        raise BadInput(f"{src}: objective.metric={metric!r} is not one of {', '.join(valid)}{suggest(metric, valid)}")
    mode = cfg.objective.mode if cfg.objective.mode is not None else cfg.mode
    if mode not in MODES:
        raise BadInput(f"{src}: objective.mode={mode!r} is not one of min, max")
    cfg.objective.metric, cfg.objective.mode = final(short), mode
    for key in ("max_drift", "max_regret"):
        if not cfg.verify[key] >= 0:
            raise BadInput(f"{src}: verify.{key}={cfg.verify[key]!r} must be >= 0")
    if int(cfg.verify.max_extend) < 0:
        raise BadInput(f"{src}: verify.max_extend={cfg.verify.max_extend} must be >= 0")
    if not 0 < float(cfg.verify.resolution) <= 4:
        raise BadInput(f"{src}: verify.resolution={cfg.verify.resolution!r} must be in (0, 4] octaves, e.g. 0.25")
    if int(cfg.verify.seeds) < 1:
        raise BadInput(f"{src}: verify.seeds={cfg.verify.seeds!r} must be >= 1")
    for key in ("max_seeds", "seed_step"):
        if int(cfg.verify[key]) < 1:
            raise BadInput(f"{src}: verify.{key}={cfg.verify[key]!r} must be >= 1")
    if int(cfg.verify.max_seeds) < int(cfg.verify.seeds):
        raise BadInput(
            f"{src}: verify.max_seeds={cfg.verify.max_seeds} is below verify.seeds={cfg.verify.seeds}: "
            "give max_seeds >= seeds (max_seeds = seeds adds none)"
        )
    if not len(cfg.verify.bracket):
        raise BadInput(f"{src}: verify.bracket is empty: give log2 offsets, e.g. [-2, -1, 0, 1, 2]")
