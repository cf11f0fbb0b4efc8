"""The Optuna sampler of a base-width study, and a wrapper that never suggests a point twice.

GP's acquisition can peak at a point already measured (a bound of the space, most often): in a
killed-and-resumed search it suggested lr = 0.05, the upper bound, twice in a row, and since a
trial's id is a hash of its config the second run was the same trial again, one of the study's
few trials spent on nothing. :class:`NoRepeat` hands such a trial to the independent sampler
(Optuna's random one) instead.

It compares with the study's trials that are not FAIL: measured (COMPLETE) or asked and not yet told
(RUNNING, the batch of a round). A FAIL trial measured nothing, and tune-base's rounds retire the asks
of a batch cut by a killed driver as FAIL: were they compared, the batch asked again with the same
seed would differ from the one an uninterrupted run asked (:mod:`orchestrator.studies.base_study`).
"""

from __future__ import annotations

import math
from typing import Any


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same parameters: equal keys, numbers equal to 1e-9 relative, other values equal."""
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, (int, float)) and isinstance(w, (int, float)):
            if not math.isclose(float(v), float(w), rel_tol=1e-9, abs_tol=0.0):
                return False
        elif v != w:
            return False
    return True


def _no_repeat_class():
    """The class :class:`NoRepeat`, made on first use: Optuna is imported only then (``mutransfer --help``
    stays fast), and the class lives at module level under its own name, so Ray Tune can pickle the
    searcher that holds it."""
    import optuna
    from optuna.trial import TrialState

    class NoRepeat(optuna.samplers.BaseSampler):
        """``inner``'s relative suggestion, dropped when a trial of the study that is not FAIL already
        holds exactly those parameters (the trial's parameters are then drawn by ``inner``'s
        independent sampler)."""

        def __init__(self, inner):
            self.inner = inner

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            params = self.inner.sample_relative(study, trial, search_space)
            if params and any(
                t.number != trial.number and t.state != TrialState.FAIL and _same(t.params, params)
                for t in study.get_trials(deepcopy=False)
            ):
                return {}
            return params

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self.inner.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.inner.reseed_rng()

    NoRepeat.__module__, NoRepeat.__qualname__ = __name__, "NoRepeat"
    return NoRepeat


def __getattr__(name: str):
    if name == "NoRepeat":
        globals()["NoRepeat"] = cls = _no_repeat_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def no_repeat(inner):
    """``inner`` (an Optuna sampler) that never suggests a point a trial of the study (not FAIL) holds."""
    cls = globals().get("NoRepeat") or __getattr__("NoRepeat")
    return cls(inner)
