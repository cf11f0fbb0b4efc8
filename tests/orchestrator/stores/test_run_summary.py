"""orchestrator.stores.run_summary: run names, params, parent-run summaries and links MLflow's UI resolves."""

import json
import re

from orchestrator.stores.run_summary import (
    base_summary,
    config_params,
    group_label,
    lr_label,
    md_for_mlflow,
    md_served_at,
    run_name,
    runs_url,
    tag_number,
    trial_summary,
    verdict_summary,
    view_state,
)


def _row(**kw):
    row = {"algorithm": "pc", "parametrization": "mup", "width": 256, "lr": 2.0**-6, "inference_steps": 20, "seed": 0}
    row.update(kw)
    return row


def test_run_names_read_algorithm_parametrization_width_lr_steps_and_seed():
    assert run_name(_row()) == "pc-mup-w256-lr2^-6-T20-s0"
    assert (
        run_name(_row(algorithm="bp", parametrization="sp", width=64, lr=2**-6.25, seed=2)) == "bp-sp-w64-lr2^-6.25-s2"
    )  # no T: BP has no inference steps
    assert run_name(_row(lr=0.06431172)) == "pc-mup-w256-lr2^-3.96-T20-s0"  # Optuna's lr: two decimals
    assert (
        run_name(_row(gamma_bar_L=-1.0), swept=["lr", "width", "gamma_bar_L"])
        == "pc-mup-w256-lr2^-6-T20-gamma_bar_L=-1.0-s0"
    )
    assert lr_label(1.0) == "2^0" and lr_label(256.0) == "2^8"


def test_group_labels_and_config_params():
    assert group_label({"algorithm": "pc", "parametrization": "sp", "inference_steps": 10}) == "pc-sp-T10"
    assert group_label({"algorithm": "tp", "parametrization": "mup", "inference_steps": 10}) == "tp-mup"
    params = config_params(
        {
            "name": "x",
            "grid": {"width": [64, 128], "lr": {"log2": [-8, 0, 1]}},
            "train": {"epochs": 3},
            "tracking": {"uri": None},
        }
    )
    assert params == {
        "grid.width": "[64, 128]",
        "grid.lr.log2": "[-8, 0, 1]",
        "train.epochs": "3",
        "tracking.uri": "None",
    }


def test_view_state_selects_the_studys_columns_and_the_url_opens_it():
    cols = json.loads(view_state())["selectedColumns"]
    assert "params.`log2_lr`" in cols and "tags.`final_train_loss`" in cols and "tags.`diverged`" in cols
    assert json.loads(view_state())["groupBy"]["groupByKeys"] == [
        {"mode": "param", "groupByData": "algorithm"},
        {"mode": "param", "groupByData": "parametrization"},
    ]
    assert (
        runs_url("http://127.0.0.1:5000/", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=mutransfer"
    )


def test_report_markdown_images_point_at_the_servers_artifacts():
    md = "# r\n\n![loss](loss_vs_lr.png)\n\n![ext](https://x/y.png)\n"
    out = md_for_mlflow(md, "abc")
    assert "![loss](get-artifact?path=report%2Floss_vs_lr.png&run_uuid=abc)" in out
    assert "![ext](https://x/y.png)" in out  # absolute links are left alone
    # MLflow's markdown viewer drops URLs with a scheme other than http(s)/mailto (react-markdown's
    # default urlTransform): the link must have no colon at all
    assert ":" not in re.search(r"\]\((get-artifact[^)]*)\)", out).group(1)
    # ... but its artifact viewer shows an image only with a scheme: `mutransfer ui` makes them absolute
    served = md_served_at(out, "http://127.0.0.1:5001/")
    assert "![loss](http://127.0.0.1:5001/get-artifact?path=report%2Floss_vs_lr.png&run_uuid=abc)" in served
    assert md_served_at(served, "http://h:9") == md_served_at(out, "http://h:9")  # served elsewhere later


def test_verdict_and_base_summaries():
    summary = {
        "sweep": "demo",
        "metric": "final_train_loss",
        "mode": "min",
        "group_keys": ["algorithm", "parametrization", "inference_steps"],
        "thresholds": {"max_drift": 0.2, "max_regret": 0.05},
        "groups": [
            {
                "algorithm": "pc",
                "parametrization": "mup",
                "inference_steps": 10,
                "lr_star_base": 0.3,
                "drift_exponent": -0.05,
                "drift_lo": -0.1,
                "drift_hi": 0.01,
                "max_regret": "inf",
                "regret_lo": None,
                "regret_hi": None,
                "base_regret": 0.004,
                "edge_exponent": 0.0,
                "level": 0.9833333,
                "verdict": "transfers",
                "held_out_metric": "final_test_loss",
                "held_out_verdict": "inconclusive",
            },
            {
                "algorithm": "bp",
                "parametrization": "sp",
                "inference_steps": 10,
                "drift_exponent": -0.9,
                "verdict": "drifts",
                "held_out_verdict": None,  # no held-out analysis of this group: no tag
            },
        ],
    }
    text, metrics, tags = verdict_summary(summary, "rid")
    assert tags == {
        "verdict/pc-mup-T10": "transfers",
        "held_out_verdict/pc-mup-T10": "inconclusive",
        "verdict/bp-sp": "drifts",
        "max_regret/pc-mup-T10": "inf",  # ∞ cannot be a metric: a tag of the same key says it
    }
    assert metrics["drift_k/pc-mup-T10"] == -0.05 and "max_regret/pc-mup-T10" not in metrics
    assert metrics["base_regret/pc-mup-T10"] == 0.004 and "base_regret/bp-sp" not in metrics
    assert "| pc-mup-T10 | 0.3 | -0.05 [-0.1, 0.01] | ∞ [–, –] | 0.4% | 0 | inconclusive | **transfers** |" in text
    assert "| bp-sp | – | -0.9 [–, –] | – [–, –] | – | – | – | **drifts** |" in text
    assert "k's 98.3% interval" in text and "excess regret" in text and "edge-limited" in text
    assert "get-artifact?path=report%2Freport.html&run_uuid=rid" in text
    base = {
        "metric": "final_train_loss",
        "mode": "min",
        "trials_per_study": 6,
        "groups": [
            {
                "group": {"algorithm": "bp"},
                "best": {"lr": 0.25},
                "best_value": 0.66,
                "trials_complete": 6,
                "best_trial_id": "39d6",
            },
            {"group": {"algorithm": "tp"}, "best": None, "trials_complete": 0},
        ],
    }
    text, metrics, _ = base_summary(base)
    assert metrics == {
        "best_lr/bp": 0.25,
        "best_log2_lr/bp": -2.0,
        "best_value/bp": 0.66,
        "trials/bp": 6.0,
        "trials/tp": 0.0,
    }
    assert "| bp | 0.25 | -2 | 0.66 | 6 | 39d6 |" in text and "| tp | – | – | – | 0 | – |" in text


def test_numbers_are_rounded_and_non_finite_values_become_tags():
    from orchestrator.stores.run_summary import lr_step, sig, split_values

    assert sig(0.2984611852760617) == 0.2985 and sig(-0.045919063790330394) == -0.04592 and sig(123456.0) == 123500.0
    assert sig(0.0) == 0.0
    metrics, tags = split_values({"a": 0.123456, "b": "inf", "c": float("-inf"), "d": None, "e": float("nan")})
    assert metrics == {"a": 0.1235} and tags == {"b": "inf", "c": "-inf", "d": "nan", "e": "nan"}
    # quarter octaves land on integer steps, lr = 2^(step/4)
    assert [lr_step(2.0**x) for x in (-4, -3.75, 0, 1.5)] == [-16, -15, 0, 6]


def test_view_state_lists_the_parent_runs_first():
    state = json.loads(view_state())
    # ascending on the role tag: "sweep" (the parent runs holding the verdicts) before "trial"
    assert state["orderByKey"] == "tags.`mutransfer.role`" and state["orderByAsc"] is True
    assert sorted(["trial", "sweep"])[0] == "sweep"


def test_experiment_description_has_the_setup_and_each_groups_verdict():
    import pandas as pd

    from orchestrator.stores.run_summary import experiment_description

    summary = {
        "sweep": "demo",
        "metric": "final_train_loss",
        "mode": "min",
        "group_keys": ["algorithm", "parametrization"],
        "thresholds": {"max_drift": 0.2, "max_regret": 0.05},
        "groups": [
            {
                "algorithm": "bp",
                "parametrization": "mup",
                "drift_exponent": -0.045919,
                "max_regret": 0.0123456,
                "verdict": "transfers",
                "verdict_reason": "k within",
            },
            {
                "algorithm": "bp",
                "parametrization": "sp",
                "drift_exponent": -0.44,
                "max_regret": "inf",
                "verdict": "drifts",
                "verdict_reason": "k outside",
            },
        ],
    }
    config = {
        "trainer": {"depth": 3, "optimizer": "sgd", "loss": "ce", "base_width": 64},
        "data": {"dataset": "fmnist7", "subset": 2000, "test_subset": 500},
        "train": {"epochs": 3, "batch_size": 64},
    }
    trials = pd.DataFrame({"width": [64, 128, 64, 128], "seed": [0, 0, 1, 1], "status": ["ok", "ok", "ok", "diverged"]})
    text = experiment_description(summary, config, trials, "rid")
    assert "fmnist7 (2000 training images, 500 test)" in text and "3 epochs of batch 64" in text
    assert "widths 64, 128 (base 64)" in text and "2 seeds" in text and "4 trials (1 diverged, 3 ok)" in text
    assert "| bp-mup | **transfers** | -0.04592 | 1.235% | k within |" in text
    assert "| bp-sp | **drifts** | -0.44 | ∞ | k outside |" in text
    assert "**Verdict**: 1 drifts, 1 transfers of 2 groups." in text
    assert "get-artifact?path=report%2Freport.html&run_uuid=rid" in text


def test_a_trials_own_numbers_as_tags_at_four_significant_figures():
    assert [tag_number(v) for v in (2, 2.0, 0.123456789, 12.3456, 1234567.0, 3.4e-7)] == [
        "2",
        "2",
        "0.1235",
        "12.35",
        "1234567",
        "3.4e-07",
    ]
    assert [tag_number(v) for v in (float("inf"), float("-inf"), float("nan"), True, "x")] == [
        "inf",
        "-inf",
        "nan",
        "1",
        "x",
    ]
    row = {"status": "diverged", "final_train_loss": float("inf"), "epochs_done": 2, "wall_s": None}
    tags = trial_summary(row, ("final_train_loss", "epochs_done", "wall_s", "diverged"), {"diverged_at_step": 5.0})
    assert tags == {"final_train_loss": "inf", "epochs_done": "2", "diverged": "1", "diverged_at_step": "5"}


def test_the_description_shows_a_wide_figure_as_its_preview_linked_to_the_original():
    summary = {"group_keys": ["algorithm"], "groups": [{"algorithm": "bp", "verdict": "transfers"}]}
    text, _, _ = verdict_summary(summary, "r1", {"lr_star_vs_width.png": "report/preview/lr_star_vs_width.png"})
    full = "get-artifact?path=report%2Flr_star_vs_width.png&run_uuid=r1"
    small = "get-artifact?path=report%2Fpreview%2Flr_star_vs_width.png&run_uuid=r1"
    assert f"[![optimal learning rate against width]({small})]({full})" in text
    assert "![loss against learning rate](get-artifact?path=report%2Floss_vs_lr.png&run_uuid=r1)" in text
    assert "preview" not in verdict_summary(summary, "r1")[0]
