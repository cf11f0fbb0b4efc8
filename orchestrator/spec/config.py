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
import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.schema import DEFAULT_METRIC, DEFAULT_MODE, DEFAULT_VERIFY
from orchestrator.errors import BadInput
from orchestrator.spec import validate
from orchestrator.spec.validate import (  # noqa: F401  (METRICS, BATCHED, suggest: re-exported)
    BATCHED,
    METRICS,
    coerce,
    grid_values,
    suggest,
    trainer_fields,
)
from orchestrator.stores.paths import check_name


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

    max_drift: float = DEFAULT_VERIFY["max_drift"]  # the results contract's defaults (analysis.schema)
    max_regret: float = DEFAULT_VERIFY["max_regret"]
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
        values = [coerce(key, v, f"grid.{key}={v!r}", src) for v in grid_values(key, section[key], src)]
        return f"grid.{key}", values
    if key in fixed:
        return f"trainer.{key}", [coerce(key, fixed[key], f"trainer.{key}", src)]
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
    validate.check_keys(raw, SweepConfig, "", src)
    dot = parse_overrides(overrides)
    validate.check_keys(dot, SweepConfig, "", "override")
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
    validate.check_device_request((t.trainer["device"] for t in trials), float(cfg.resources.gpu), src)
    return Sweep(name=name, source=src, config=cfg, trials=trials)


# ---- grid expansion and trial ids ---------------------------------------------------
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
    """All trials of the grid (cartesian product), each validated as a TrainerConfig
    (the checks: :mod:`orchestrator.spec.validate`)."""
    validate.check_run(cfg, src)
    fixed = {k: coerce(k, v, f"trainer.{k}", src) for k, v in cfg.trainer.items()}
    validate.check_grid(fixed, cfg.grid, src)
    axes = [(key, validate.grid_axis(key, spec, src)) for key, spec in cfg.grid.items()]
    data = dict(OmegaConf.to_container(cfg.data))
    train = dict(OmegaConf.to_container(cfg.train))
    swept = tuple(k for k, _ in axes)
    trials: dict[str, TrialSpec] = {}  # by id: grid.device [cpu, auto] names one trial
    for combo in itertools.product(*(v for _, v in axes)):
        tc = validate.trainer_config({**fixed, **dict(zip(swept, combo))}, swept, src)
        trainer = dataclasses.asdict(tc)
        tid = trial_id(trainer, data, train)
        if tid not in trials:
            trials[tid] = TrialSpec(tid, trainer, data, train, swept)
            trials[tid].__dict__["config"] = tc  # cached_property's slot: the config built once
    return list(trials.values())


def check_runnable(sweep: Sweep) -> None:
    """Checks that need the trainers and the data (:func:`orchestrator.spec.validate.check_runnable`):
    an algorithm with no trainer, an unknown dataset or one whose files are missing, a bad
    ``$MUTRANSFER_MATMUL``."""
    algorithms = {t.trainer["algorithm"] for t in sweep.trials}
    validate.check_runnable(algorithms, sweep.config.data.dataset, sweep.source)


def to_yaml(sweep: Sweep) -> str:
    """The resolved config as YAML (what goes to ``results/<sweep>/sweep.yaml``)."""
    return OmegaConf.to_yaml(sweep.config)


def resolve_judging(cfg: DictConfig, src: str = "<config>") -> None:
    """Fill and check ``objective`` (default: ``final_<metric>``, ``mode``) and ``verify`` in place.

    Raises:
        BadInput: an unknown objective metric or mode, a negative threshold, an empty bracket.
    """
    cfg.objective.metric, cfg.objective.mode = validate.check_objective(cfg, src)
    validate.check_verify(cfg, src)
