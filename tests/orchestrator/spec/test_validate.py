"""orchestrator.spec.validate: the one home of the sweep file's checks, and the objective's rule in
analysis.schema (the messages themselves are pinned by test_config, test_bad_input and the studies' tests)."""

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis import schema
from orchestrator.errors import BadInput
from orchestrator.spec import config, validate
from orchestrator.spec.config import SweepConfig
from orchestrator.studies import tune_base, verify


def _cfg(**over):
    return OmegaConf.merge(OmegaConf.structured(SweepConfig), over)


def test_the_loaders_and_studies_use_the_validate_module():
    assert config.METRICS is validate.METRICS and config.suggest is validate.suggest
    assert config.trainer_fields is validate.trainer_fields and config.BATCHED is validate.BATCHED
    assert tune_base.check_search is validate.check_search and tune_base.search_param is validate.search_param
    assert verify.check_verify_run is validate.check_verify_run


def test_search_param_checks_one_entry_and_normalises_it():
    assert validate.search_param("lr", {"low": 1e-3, "high": 1.0}, [], "s.yaml") == {
        "name": "lr",
        "type": "float",
        "low": 1e-3,
        "high": 1.0,
        "log": True,  # lr is log-scale unless told otherwise; other keys are not
    }
    assert validate.search_param("depth", {"choices": [2, 3]}, [], "s.yaml")["choices"] == [2, 3]
    with pytest.raises(BadInput, match=r"^s.yaml: search.space.depth: depth is also a grid axis; keep one$"):
        validate.search_param("depth", {"choices": [2, 3]}, ["depth"], "s.yaml")
    with pytest.raises(BadInput, match=r"search.space.width: width cannot be searched"):
        validate.search_param("width", {"low": 1, "high": 2}, [], "s.yaml")


def test_check_verify_run_wants_zero_in_the_bracket_and_two_widths():
    cfg = _cfg(grid={"width": [8, 16]}, verify={"bracket": [-1, 1]})
    with pytest.raises(BadInput, match=r"^s.yaml: verify.bracket=\[-1.0, 1.0\] must contain 0"):
        validate.check_verify_run(cfg, [8, 16], "s.yaml")
    cfg.verify.bracket = [-1.0, 0.0, 1.0]
    assert validate.check_verify_run(cfg, [8, 16, 8], "s.yaml") == [-1.0, 0.0, 1.0]
    with pytest.raises(BadInput, match=r"grid.width needs at least two widths"):
        validate.check_verify_run(cfg, [8, 8], "s.yaml")


def test_check_objective_defaults_to_the_top_level_metric_and_mode():
    assert validate.check_objective(_cfg(), "s") == (schema.DEFAULT_OBJECTIVE_METRIC, schema.DEFAULT_MODE)
    assert validate.check_objective(_cfg(metric="test_acc", mode="max"), "s") == ("final_test_acc", "max")
    assert validate.check_objective(_cfg(metric="test_acc", objective={"mode": "min"}), "s") == (
        "final_test_acc",
        "min",
    )
    with pytest.raises(BadInput, match=r"objective.metric='final_test_los' is not one of .*did you mean"):
        validate.check_objective(_cfg(objective={"metric": "final_test_los"}), "s")


def test_the_objective_rule_counts_a_diverged_or_non_finite_trial_as_the_worst():
    assert schema.objective_value(0.5, "ok", "min") == 0.5 and schema.objective_value(0.5, "ok", "max") == 0.5
    assert schema.objective_value(0.5, "diverged", "min") == math.inf
    assert schema.objective_value(0.5, "diverged", "max") == -math.inf
    assert schema.objective_value(math.nan, "ok", "max") == -math.inf
    assert schema.sign("min") == 1.0 and schema.sign("max") == -1.0
    with pytest.raises(ValueError, match="mode='best' is not one of min, max"):
        schema.sign("best")
    # elementwise on a table as on one trial
    status = pd.Series(["ok", "ok", "diverged", "ok", "ok"])
    value = pd.Series([0.3, np.nan, 0.2, np.inf, -np.inf])
    assert schema.counts_as_diverged(status, value).tolist() == [False, True, True, True, True]
    assert [bool(schema.counts_as_diverged(s, v)) for s, v in zip(status, value)] == [False, True, True, True, True]
