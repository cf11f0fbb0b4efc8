"""verify: the bracket trials, the exit-code rule, bad input; a real BP/SGD verify on Fashion-MNIST (slow)."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.config import load_sweep, trial_id
from orchestrator.verify import NoOptimum, decide, refinements, transfer_trials, with_seeds

ROOT = Path(__file__).resolve().parents[2]
SPACE = """
name: vf
trainer: {optimizer: sgd, depth: 3, activation: tanh, base_width: 16}
data: {dataset: fmnist, subset: 300, test_subset: 200}
train: {epochs: 1, batch_size: 50}
grid:
  algorithm: [bp, pc]
  parametrization: [sp, mup]
  width: [16, 32, 64]
  seed: [0, 1]
verify: {bracket: [-1, 0, 1]}
resources: {cpu: 1}
"""


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "vf.yaml"
    p.write_text(textwrap.dedent(SPACE))
    return p


def _base(bp=0.01, pc=0.1):
    return [{"group": {"algorithm": "bp"}, "best": {"lr": bp}}, {"group": {"algorithm": "pc"}, "best": {"lr": pc}}]


def test_bracket_around_the_base_optimum_at_every_width_parametrization_and_seed(space):
    sw = load_sweep(space)
    specs = transfer_trials(sw, _base(), {i: {-1.0, 0.0, 1.0} for i in range(len(sw.trials))})
    assert len(specs) == 2 * 2 * 3 * 2 * 3 and len({s.trial_id for s in specs}) == len(specs)
    for s in specs:
        assert s.trial_id == trial_id(s.trainer, s.data, s.train) and "lr" in s.swept
    df = pd.DataFrame([s.trainer for s in specs])
    for algo, lr in (("bp", 0.01), ("pc", 0.1)):
        sub = df[df.algorithm == algo]
        assert sorted(sub.lr.unique()) == pytest.approx([lr / 2, lr, lr * 2])
        assert sub.groupby(["parametrization", "width", "seed"]).size().eq(3).all()
    assert set(df.width) == {16, 32, 64} and set(df.parametrization) == {"sp", "mup"}


def test_no_finite_base_optimum_stops_verify(space):
    sw = load_sweep(space)
    with pytest.raises(NoOptimum, match="algorithm=pc"):
        transfer_trials(
            sw,
            [{"group": {"algorithm": "bp"}, "best": {"lr": 0.01}}, {"group": {"algorithm": "pc"}, "best": None}],
            {i: {0.0} for i in range(len(sw.trials))},
        )


def test_verify_adds_its_default_seeds_only_where_the_grid_has_none(space):
    sw = load_sweep(space)
    assert with_seeds(sw) is sw  # grid.seed [0, 1] is kept
    bare = load_sweep(space, ["grid.seed=[0]"])
    no_seed = load_sweep(space, ["verify.seeds=3"])
    no_seed.config.grid.pop("seed")
    from orchestrator.config import expand

    no_seed.trials = expand(no_seed.config)
    got = with_seeds(no_seed)
    assert sorted({t.trainer["seed"] for t in got.trials}) == [0, 1, 2]
    assert len(got.trials) == 3 * len(no_seed.trials) and len(bare.trials) == len(no_seed.trials)


def _groups(rows):
    return pd.DataFrame(
        [
            {
                "algorithm": a,
                "parametrization": p,
                "inference_steps": 20,
                "verdict": v,
                "verdict_reason": f"reason {a}/{p}",
            }
            for a, p, v in rows
        ]
    )


def test_mup_groups_decide_sp_is_the_control():
    assert decide(_groups([("bp", "mup", "transfers"), ("bp", "sp", "drifts")]))[0] == 0
    code, lines = decide(_groups([("bp", "mup", "transfers"), ("pc", "mup", "drifts"), ("pc", "sp", "transfers")]))
    assert code == 1 and lines == ["pc/mup/20: drifts: reason pc/mup"]
    # drifts wins over inconclusive; inconclusive alone exits 3
    assert decide(_groups([("bp", "mup", "inconclusive"), ("pc", "mup", "drifts")]))[0] == 1
    code, lines = decide(_groups([("bp", "mup", "inconclusive"), ("bp", "sp", "drifts")]))
    assert code == 3 and lines == ["bp/mup/20: inconclusive: reason bp/mup"]
    # no muP group at all: every group is judged
    assert decide(_groups([("bp", "sp", "drifts")]))[0] == 1
    assert decide(_groups([("bp", "sp", "transfers")]))[0] == 0
    assert decide(pd.DataFrame())[0] == 3


@pytest.mark.parametrize(
    "args",
    [
        ["verify.bracket=[-1, 1]"],
        ["grid.width=[16]"],
        ["verify.max_drift=-0.1"],
        ["verify.bracket=[]"],
        ["verify.resolution=0"],
        ["verify.seeds=0"],
        ["--bootstrap", "-1"],
        ["--trials", "0"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(space, tmp_path, capsys, args):
    results = tmp_path / "results"
    overrides = [a for a in args if "=" in a]
    options = [a for a in args if a not in overrides]
    code = main(["verify", str(space), *overrides, "--results", str(results), *options])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err, err
    assert not results.exists()


def _real_verify(name: str, tmp_path, env):
    """Run ``mutransfer verify search_spaces/NAME.yaml``; (results dir, process, summary, drift by parametrization)."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "verify",
            str(ROOT / "search_spaces" / f"{name}.yaml"),
            "--results",
            str(results),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode in (0, 1, 3), proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((results / name / "report" / "summary.json").read_text())
    return results, proc, summary, {g["parametrization"]: g["drift_exponent"] for g in summary["groups"]}


@pytest.mark.slow
def test_real_bp_sgd_verify_on_pooled_inputs_sp_drifts_mup_does_not(tmp_path, ray_env):
    """The negative control: search_spaces/verify_bp_sgd.yaml (BP, SGD + MSE, 7x7-pooled Fashion-MNIST, widths
    64..512, 3 seeds, quarter-octave refinement). With 49 inputs the hidden layers dominate SP's tangent kernel,
    so SP's optimum must move like width^k with k < -0.5; muP's must not. This can fail: on the 784-pixel
    inputs the same check measured SP k = -0.39 (the input layer dominates there)."""
    results, proc, summary, k = _real_verify("verify_bp_sgd", tmp_path, ray_env)
    groups = {g["parametrization"]: g for g in summary["groups"]}
    assert k["sp"] < -0.5, (k, proc.stdout[-3000:])
    assert groups["sp"]["drift_hi"] < -0.2 and groups["sp"]["verdict"] == "drifts"
    assert abs(k["mup"]) < 0.2, (k, proc.stdout[-3000:])
    assert groups["mup"]["n_seeds"] == 3 and groups["mup"]["control_verdict"] == "drifts"
    trials = pd.read_parquet(results / "verify_bp_sgd" / "trials.parquet")
    assert trials.trial_id.is_unique and set(trials.seed) == {0, 1, 2}
    base = json.loads((results / "verify_bp_sgd" / "base_lr.json").read_text())
    lr = base["groups"][0]["best"]["lr"]
    offsets = np.log2(trials.lr.unique() / lr)
    assert set(np.arange(-2, 2.5, 1.0)) <= set(np.round(offsets, 6))  # the bracket, plus the refinements
    assert np.any(np.isclose(offsets % 1, 0.25) | np.isclose(offsets % 1, 0.75))  # quarter-octave points
    assert "VERDICT" in proc.stdout and "mutransfer ui" in proc.stdout and "refine (round" in proc.stdout
    assert (results / "verify_bp_sgd" / "report" / "report.md").exists()
    code = {"transfers": 0, "drifts": 1, "inconclusive": 3}[groups["mup"]["verdict"]]
    assert proc.returncode == code and math.isfinite(lr)


@pytest.mark.slow
def test_real_bp_sgd_verify_sp_drifts_on_teacher_student(tmp_path, ray_env):
    """The same verify on the teacher-student set (d = 32): the hidden layers dominate SP's NTK, so SP's
    optimum (at its divergence cliff) drifts like width^-1/2 or faster; muP's does not. Measured
    2026-11-28: SP k = -0.55, muP k = -0.03 (about 3 minutes on 2 CPUs)."""
    _, proc, _, k = _real_verify("verify_bp_sgd_teacher", tmp_path, ray_env)
    assert abs(k["mup"]) < 0.25, (k, proc.stdout[-3000:])
    assert k["sp"] < -0.5, (k, proc.stdout[-3000:])


def _planted(sweep, best_lr, best_k_by_width, ks):
    rows = []
    for t in sweep.trials:
        for kk in ks:
            lr = best_lr * 2.0**kk
            trainer = {**t.trainer, "lr": lr}
            rows.append(
                {
                    **trainer,
                    "trial_id": trial_id(trainer, t.data, t.train),
                    "status": "ok",
                    "final_train_loss": 1.0 + (kk - best_k_by_width[t.trainer["width"]]) ** 2,
                }
            )
    return pd.DataFrame(rows)


def _by_width(sweep, more):
    out = {}
    for i, v in more.items():
        out.setdefault(sweep.trials[i].trainer["width"], set()).update(v)
    return out


def test_bracket_extends_where_the_best_lr_is_at_an_end(space):
    sweep = load_sweep(space, ["verify.max_extend=4", "objective.metric=final_train_loss", "verify.find_edge=false"])
    base = [{"group": {"algorithm": a}, "best": {"lr": 0.1}} for a in ("bp", "pc")]
    ks = [-1.0, 0.0, 1.0]
    # width 16: interior optimum (refined to 1/2 around it); 32: below the bracket; 64: above it
    table = _planted(sweep, 0.1, {16: 0.0, 32: -3.0, 64: 2.5}, ks)
    table["status"] = "ok"
    cur = {i: set(ks) for i in range(len(sweep.trials))}
    assert _by_width(sweep, refinements(sweep, base, table, cur)) == {16: {-0.5, 0.5}, 32: {-2.0}, 64: {2.0}}
    # a diverged top point is not extended past; it is bisected towards the edge instead
    top = (table.width == 64) & (table.lr == 0.2)
    table.loc[top, "status"], table.loc[top, "final_train_loss"] = "diverged", math.inf
    assert _by_width(sweep, refinements(sweep, base, table, cur))[64] == {-0.5, 0.5}
    # never past max_extend spacings
    sweep0 = load_sweep(space, ["verify.max_extend=0", "objective.metric=final_train_loss", "verify.find_edge=false"])
    assert _by_width(sweep0, refinements(sweep0, base, table, cur))[32] == {-0.5}  # refined inwards only
