"""tune-base: Optuna at the base width, one study per group, the groups' trials run together on Ray Tune.

A sweep file's ``search:`` section says what is searched (default: lr, log-uniform over the
grid's lr range) and how::

    search: {space: {lr: {low: 1.0e-4, high: 1.0, log: true}}, trials: 20, batch: 4, storage: null, seed: 0}

Groups: one study per combination of the grid keys that change the network at the base width
(e.g. algorithm, inference_steps), every trial at ``width = base_width``. Width, seed and
parametrization are not group keys: at the base width SP and μP are the same network with the
same learning rate (m = 1), so one search serves both (its trials run as ``mup``, or the grid's
only parametrization), and the search uses the grid's first seed.

Rounds (issues 27, 28; :mod:`.base_study`): Optuna's ask-and-tell, driven here. In each round every
study short of ``trials`` COMPLETE trials asks ``search.batch`` suggestions; all groups' suggestions
run as one submission (:func:`_run_batch`: a Ray Tune run of the specs through the sweep's
``Recorder``), so the workers stay busy across groups; then each trial is told the value Parquet
recorded. Each group's round r asks through a fresh sampler seeded by (``search.seed``, group, r), and
a driver killed at any point resumes where it was: the learning rates depend only on the seed and
the trials before them, not on when the driver died.

Resume: the studies live in an RDB storage (default SQLite ``results/<name>/optuna.db``) or a
journal file (``search.storage: journal``, for shared file systems; :mod:`.study_storage`). A
rerun finishes the interrupted round (its trials that Parquet holds as done are not run again),
then asks new rounds until each study holds ``trials`` COMPLETE trials. RUNNING trials of a study
written by the former ``OptunaSearch`` path are settled by :func:`resume_study`.

Sampler (:func:`base_sampler`, issue 26): Optuna's ``GPSampler`` (3 random start-up trials, then a
Gaussian process and log-EI, qLogEI over the batch's trials asked before) when the space has at most 4
keys and no ``choices``; multivariate TPE (3 start-up trials, constant liar) when a key has ``choices``
or there are more keys (not measured). Log-scale keys are modelled in log space. A diverged trial's
``inf`` is clipped by GPSampler to the worst finite value (a warning), so the cliff looks only as bad as
the worst trial and the GP may probe it again. On a planted 1-D optimum (``benchmarks/base_sampler.py``,
one trial at a time) GP put the best of 6 and 10 trials within 1/4 octave of the optimum more often
than random draws and TPE, and less often than TPE with 20 trials. Each suggestion costs GP 0.1-0.4 s
on 2 CPUs.

Layout::

    results/<name>/optuna.db       the studies
    results/<name>/base_lr.json    the best learning rate (and other searched keys) per group
    results/<name>/base/           the search trials as the sweep "<name>-base": sweep.yaml,
                                   trials.parquet, history.parquet, tune/ (MLflow: the sweep's
                                   experiment, parent run "<name>-base")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from omegaconf import OmegaConf

from analysis.io import write_json_atomic
from analysis.schema import AXES
from orchestrator.engine.session import Session, open_session
from orchestrator.spec.config import Sweep, TrialSpec, check_runnable, searched_spec, trial_id  # noqa: F401
from orchestrator.spec.validate import check_search, search_param
from orchestrator.stores.paths import check_results_dir, inside
from orchestrator.stores.results_store import DONE_STATUSES, ResultsStore
from orchestrator.stores.study_storage import check_storage_url, default_url, open_storage, storage_file  # noqa: F401
from orchestrator.studies.base_study import (  # noqa: F401  (re-exported: tune_base's public names before base_study)
    GP_MAX_DIMS,
    STARTUP_TRIALS,
    _params,
    base_sampler,
    objective_value,
    open_round,
    recorded,
    resume_study,
    sampler_seed,
    search_rounds,
    study_best,
)

# Not a tune-base group key: the axes (schema.AXES), and the parametrization: at the base width SP and
# muP are one network (m = 1), so one search serves both.
NOT_GROUPED = (*AXES, "parametrization")
DEFAULT_LR_RANGE = (1.0e-4, 1.0)


# ---- the search space and the groups --------------------------------------------------
def search_space(sweep: Sweep) -> list[dict[str, Any]]:
    """The checked search space: one ``{name, type, low, high, log}`` or ``{name, type, choices}`` per key.

    ``lr`` is always searched (default: log-uniform over the grid's lr range, else 1e-4..1).

    Raises:
        BadInput: an unknown or unsearchable key, a bad range, or a key that is also a grid axis.
    """
    src, cfg = sweep.source, sweep.config
    raw = OmegaConf.to_container(cfg.search.space, resolve=True) or {}
    if "lr" not in raw:
        lrs = [t.trainer["lr"] for t in sweep.trials] if "lr" in cfg.grid else []
        low, high = (min(lrs), max(lrs)) if len(set(lrs)) > 1 else DEFAULT_LR_RANGE
        raw = {"lr": {"low": low, "high": high, "log": True}, **raw}
    return [search_param(name, spec, cfg.grid, src) for name, spec in raw.items()]


@dataclass
class SearchGroup:
    """One study: its group values, the template trial (base width, searched keys unset), its study name."""

    label: dict[str, Any]
    template: dict[str, Any]
    study: str

    @property
    def text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.label.items()) or "all"


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def search_groups(sweep: Sweep, space: list[dict[str, Any]]) -> list[SearchGroup]:
    """One :class:`SearchGroup` per combination of the grid keys that matter at the base width."""
    searched = {p["name"] for p in space}
    keys = [k for k in sweep.swept_keys if k not in NOT_GROUPED and k not in searched]
    pars = {t.trainer["parametrization"] for t in sweep.trials}
    par = "mup" if "mup" in pars else sorted(pars)[0]
    groups: dict[tuple, SearchGroup] = {}
    for t in sweep.trials:
        values = tuple(t.trainer[k] for k in keys)
        if values in groups:
            continue
        trainer = {**t.trainer, "width": t.trainer["base_width"], "parametrization": par}
        template = {
            "trainer": trainer,
            "data": dict(t.data),
            "train": dict(t.train),
            "swept": [*keys, *sorted(searched)],
        }
        ident = {
            "template": {**template, "trainer": {k: v for k, v in trainer.items() if k not in searched}},
            "space": space,
            "objective": OmegaConf.to_container(sweep.config.objective),
        }
        label = dict(zip(keys, values))
        name = "-".join(str(v) for v in values) or "all"
        groups[values] = SearchGroup(label, template, f"{sweep.name}:{name}:{_short_hash(ident)}")
    return list(groups.values())


# ---- the command's engine ------------------------------------------------------------
@dataclass
class BaseResult:
    """What tune-base did: per group the study's state and best; where everything is."""

    sweep_dir: Path
    base_dir: Path
    storage: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    tracking_uri: str = ""
    tracked: bool = False


def storage_url(sweep: Sweep, results_dir: str | Path, storage: str | None = None) -> str:
    """``--storage``, else ``search.storage``, else SQLite at ``<results>/<name>/optuna.db``
    (``journal``: a journal file at ``<results>/<name>/optuna.journal``; see :mod:`.study_storage`)."""
    given = storage or sweep.config.search.storage
    url = default_url(given, Path(results_dir).resolve() / sweep.name)
    check_storage_url(url, "--storage" if storage else f"{sweep.source}: search.storage")
    return url


def tune_base(
    sweep: Sweep,
    results_dir: str | Path = "results",
    trials: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    track: bool = True,
    stream: TextIO | None = None,
) -> BaseResult:
    """Run each group's study up to ``trials`` COMPLETE trials at the base width; write base_lr.json.

    Args:
        sweep: the loaded sweep (its ``search`` and ``objective`` sections).
        results_dir: the results root; this sweep's files go under ``<results_dir>/<name>/``.
        trials: COMPLETE trials per study (default ``search.trials``).
        storage: SQLAlchemy URL or ``journal:PATH`` of the studies (default: ``search.storage`` or SQLite optuna.db).
        address: Ray cluster address (default: embedded Ray).
        track: log the trials to MLflow.
        stream: where progress lines go (default stderr).

    Returns:
        The :class:`BaseResult` (``groups[i]["best"]`` holds the best params, None if none finite).

    Raises:
        BadInput: bad search space, trials, storage URL, missing data; nothing is written then.
    """
    cfg = sweep.config
    n = check_search(cfg, sweep.source, trials)
    space = search_space(sweep)
    groups = search_groups(sweep, space)
    url = storage_url(sweep, results_dir, storage)
    resolved = check_results_dir(results_dir)
    store = ResultsStore(resolved / sweep.name / "base")
    store.trials()  # a corrupt table: BadInput before anything is written
    store.history()
    db = storage_file(url)
    if db is not None and (storage or cfg.search.storage) in (None, "", "journal"):
        inside(db, resolved, f"{sweep.source}: name={sweep.name!r}: study storage")
    if db is None:
        open_storage(url)  # a server that is down: BadInput before anything is written
    with open_session(sweep, results_dir, address, "mutransfer tune-base") as session:
        return _search(sweep, session, store, url, n, groups, space, track, stream)


def _search(
    sweep: Sweep,
    session: Session,
    store: ResultsStore,
    url: str,
    n: int,
    groups: list[SearchGroup],
    space: list[dict[str, Any]],
    track: bool,
    stream: TextIO | None,
) -> BaseResult:
    """tune_base once its input is checked: settle the studies, run what is missing in rounds through
    one stage of the command's session, write base_lr.json."""
    cfg, metric, mode = sweep.config, sweep.config.objective.metric, sweep.config.objective.mode
    sweep_dir = store.dir.parent
    sweep_dir.mkdir(parents=True, exist_ok=True)
    st = open_storage(url)
    rows = recorded(store)
    done = {tid: r for tid, r in rows.items() if r["status"] in DONE_STATUSES}
    states = [resume_study(st, g, mode, metric, done) for g in groups]
    base_sweep = Sweep(name=f"{sweep.name}-base", source=sweep.source, config=cfg, trials=[])
    base_cfg = cfg.copy()
    base_cfg.name = base_sweep.name  # base/ reads as the sweep "<name>-base"
    known = [
        TrialSpec(tid, s["trainer"], s["data"], s["train"], tuple(s["swept"]))
        for tid, s in _study_specs(groups, st).items()
    ]
    with session.stage(
        store,
        OmegaConf.to_yaml(base_cfg),
        recorded_as=base_sweep,
        track=track,
        tracked_name=base_sweep.name,
        experiment=cfg.tracking.experiment or sweep.name,
        stream=stream,
        known=known,
        max_concurrent=cfg.search.max_concurrent or cfg.max_concurrent,
        needs_ray=any(s["complete"] < n for s in states) or any(open_round(st, g) for g in groups),
    ) as stage:
        search_rounds(st, groups, space, n, cfg.search.batch, cfg.search.seed, metric, mode, store, stage.run)
    tracker = stage.tracker
    result = BaseResult(sweep_dir, store.dir, url, tracking_uri=stage.tracking_uri)
    for g, s in zip(groups, states):
        best = study_best(st, g, metric, mode)
        best.update(
            ran=best["trials_complete"] - s["complete"],
            recovered=s["recovered"],
            marked_failed=s["failed"],
            complete_before=s["complete"],
        )
        result.groups.append(best)
    result.path = sweep_dir / "base_lr.json"
    summary = {
        "sweep": sweep.name,
        "storage": url,
        "metric": metric,
        "mode": mode,
        "trials_per_study": n,
        "space": space,
        "groups": result.groups,
    }
    write_json_atomic(summary, result.path)
    if tracker is not None:
        from orchestrator.stores.run_summary import base_summary

        tracker.sync(store.trials(), store.history(), _study_specs(groups, st), tune_dir=store.dir / "tune")
        text, metrics, _ = base_summary(json.loads(json.dumps(summary, default=str)))
        tracker.finish(
            metrics,
            files=[store.config_path, result.path],
            config=OmegaConf.to_container(base_cfg, resolve=True),
            description=text,
        )
        result.tracked = tracker.enabled
    return result


def _study_specs(groups: list[SearchGroup], st) -> dict[str, dict[str, Any]]:
    """``{trial id: spec}`` of every trial in the groups' studies (for MLflow's back-fill)."""
    import optuna

    specs = {}
    for g in groups:
        study = optuna.load_study(study_name=g.study, storage=st)
        for t in study.get_trials(deepcopy=False):
            if not t.params:
                continue
            try:
                spec = searched_spec(g.template, _params(t))
            except (TypeError, ValueError):
                continue
            specs[spec["trial_id"]] = spec
    return specs


def group_of(trainer: dict[str, Any], result_groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tune-base group (a ``BaseResult.groups`` entry) whose label matches ``trainer``."""
    for g in result_groups:
        if all(trainer.get(k) == v for k, v in g["group"].items()):
            return g
    return None


__all__ = [
    "search_space",
    "search_groups",
    "searched_spec",
    "resume_study",
    "study_best",
    "tune_base",
    "BaseResult",
    "SearchGroup",
    "storage_url",
    "group_of",
    "objective_value",
    "base_sampler",
    "sampler_seed",
]
