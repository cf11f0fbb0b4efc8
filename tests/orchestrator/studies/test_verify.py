"""verify: the bracket trials, the exit-code rule, bad input, adaptive seeding; a real BP/SGD verify on
Fashion-MNIST (slow) and a tiny one on the teacher set that adds a seed to its one undecided group (slow)."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli.main import main
from orchestrator.spec.config import load_sweep, trial_id
from orchestrator.studies.seeding import at_seeds, grow, seed_plan, undecided
from orchestrator.studies.verify import NoOptimum, decide, refinements, transfer_trials, with_seeds

ROOT = Path(__file__).resolve().parents[3]
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
    kept = with_seeds(sw)  # grid.seed [0, 1] is kept; verify.seeds says how many it has
    assert kept.trials == sw.trials and kept.config.verify.seeds == 2 and kept.identity() == sw.identity()
    bare = load_sweep(space, ["grid.seed=[0]"])
    no_seed = load_sweep(space, ["verify.seeds=3"])
    no_seed.config.grid.pop("seed")
    from orchestrator.spec.config import expand

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


def _real_verify(name: str, tmp_path, env, seeds: int):
    """Run ``mutransfer verify search_spaces/NAME.yaml`` with its ``seeds`` and no adaptive seeding (not what
    these tests are about); (results dir, process, summary, drift by parametrization)."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "verify",
            str(ROOT / "search_spaces" / f"{name}.yaml"),
            f"verify.max_seeds={seeds}",
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
    results, proc, summary, k = _real_verify("verify_bp_sgd", tmp_path, ray_env, 3)
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
@pytest.mark.long  # the pooled-inputs verify below covers the same path on real data
def test_real_bp_sgd_verify_sp_drifts_on_teacher_student(tmp_path, ray_env):
    """The same verify on the teacher-student set (d = 32): the hidden layers dominate SP's NTK, so SP's
    optimum (at its divergence cliff) drifts like width^-1/2 or faster; muP's does not. Measured
    2026-11-28: SP k = -0.55, muP k = -0.03 (about 3 minutes on 2 CPUs)."""
    _, proc, _, k = _real_verify("verify_bp_sgd_teacher", tmp_path, ray_env, 1)
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


# ---- adaptive seeding ------------------------------------------------------------------------------
def _verdicts(rows):
    """A groups frame: (algorithm, parametrization, own verdict, verdict after the SP-control rule)."""
    return pd.DataFrame(
        [
            {"algorithm": a, "parametrization": p, "inference_steps": 20, "own_verdict": o, "verdict": v}
            for a, p, o, v in rows
        ]
    )


def test_undecided_groups_are_the_inconclusive_and_the_sp_controls_a_mup_twin_waits_on():
    keys = ["algorithm", "parametrization", "inference_steps"]
    groups = _verdicts(
        [
            ("bp", "mup", "transfers", "inconclusive"),  # waits on its control: decided on its own
            ("bp", "sp", "inconclusive", "inconclusive"),  # undecided
            ("pc", "mup", "inconclusive", "inconclusive"),  # undecided
            ("pc", "sp", "transfers", "transfers"),  # its twin does not transfer: nothing waits on it
            ("tp", "mup", "transfers", "inconclusive"),
            ("tp", "sp", "transfers", "transfers"),  # does not drift while its twin transfers: undecided
            ("dfa", "mup", "transfers", "transfers"),
            ("dfa", "sp", "drifts", "drifts"),  # the control drifts: all decided
            ("ep", "mup", "drifts", "drifts"),
            ("ep", "sp", "inconclusive", "inconclusive"),  # inconclusive on its own: undecided
        ]
    )
    got = undecided(groups, keys)
    assert list(zip(got.algorithm, got.parametrization)) == [("bp", "sp"), ("pc", "mup"), ("tp", "sp"), ("ep", "sp")]
    # before own_verdict exists, the verdict stands in for it
    assert list(undecided(groups.drop(columns="own_verdict"), keys).algorithm) == ["bp", "bp", "pc", "tp", "ep"]
    assert undecided(groups.iloc[:0], keys).empty


def test_new_seeds_continue_after_the_grid_and_go_to_the_undecided_groups_only(space):
    sw = with_seeds(load_sweep(space, ["verify.max_seeds=4", "verify.seed_step=1"]))
    assert seed_plan(sw) == ([0, 1, 2, 3], [2, 3, 4])
    assert seed_plan(with_seeds(load_sweep(space, ["grid.seed=[0, 5]", "verify.max_seeds=5"]))) == (
        [0, 5, 6, 7, 8],
        [2, 5],
    )
    assert seed_plan(with_seeds(load_sweep(space, ["verify.max_seeds=3"]))) == ([0, 1, 2], [2, 3])
    keys = ["algorithm", "parametrization", "inference_steps"]
    todo = _verdicts([("pc", "sp", "inconclusive", "inconclusive")])
    given: dict = {}
    points = grow(sw, todo, keys, [0, 1, 2], given)
    assert {(t.trainer["width"], t.trainer["seed"]) for t in points} == {(w, 2) for w in (16, 32, 64)}
    assert all(t.trainer["algorithm"] == "pc" and t.trainer["parametrization"] == "sp" for t in points)
    assert all("seed" in t.swept and t.trial_id == trial_id(t.trainer, t.data, t.train) for t in points)
    assert [t.trainer["seed"] for t in grow(sw, todo, keys, [0, 1, 2, 3], given)] == [3, 3, 3]  # 2 is given


def test_a_look_reads_only_the_trials_of_its_seeds():
    from analysis.load import SweepLogs

    trials = pd.DataFrame({"trial_id": list("abcd"), "seed": [0, 1, 2, 3]})
    history = pd.DataFrame({"trial_id": list("abcd"), "epoch": [1, 1, 1, 1]})
    logs = SweepLogs(
        name="x",
        trials=trials,
        history=history,
        source="parquet",
        objective={},
        verify={},
        tracking_uri=None,
        experiment="x",
    )
    got = at_seeds(logs, [0, 1])
    assert list(got.trials.trial_id) == ["a", "b"] and list(got.history.trial_id) == ["a", "b"]


SEEDED = """
name: vseed
trainer: {algorithm: bp, optimizer: sgd, depth: 3, activation: tanh, base_width: 16}
data: {dataset: teacher, subset: 128, test_subset: 64}
train: {epochs: 1, batch_size: 64}
grid:
  parametrization: [sp, mup]
  width: [16, 32]
search: {trials: 2, space: {lr: {low: 0.01, high: 0.5, log: true}}}
# thresholds no finite interval misses: muP transfers on its own (3 seeds: the excess regret's jackknife
# has an interval), so its SP control (which cannot drift) is the one undecided group; one bracket, no
# extension, no refinement
verify: {max_drift: 1000, max_regret: 1000, bracket: [-1, 0, 1], max_extend: 0, resolution: 1, find_edge: false,
         seeds: 3, max_seeds: 4, seed_step: 1}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_undecided_group_gets_one_more_seed_and_a_rerun_records_nothing(tmp_path, ray_env, run_cli):
    """A tiny verify on embedded Ray: only the SP control gets seed 3 (look 2 of 2), through the sweep
    path; the same command again runs no trial. About a minute on 2 CPUs."""
    space = tmp_path / "vseed.yaml"
    space.write_text(textwrap.dedent(SEEDED))
    args = ["verify", str(space), "--results", str(tmp_path / "results"), "--no-mlflow"]
    proc = run_cli(args, ray_env)
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "seeds: 1 undecided group(s) (sp) get seed 3 (look 2 of 2, 97.5 % intervals)" in proc.stdout, proc.stdout
    path = tmp_path / "results" / "vseed" / "trials.parquet"
    trials = pd.read_parquet(path)
    assert trials.trial_id.is_unique
    per = trials.groupby(["parametrization", "seed", "width"]).size()
    assert per.to_dict() == {
        (p, s, w): 3 for p in ("mup", "sp") for s in (0, 1, 2, 3) for w in (16, 32) if p == "sp" or s < 3
    }
    again = run_cli(args, ray_env)
    assert again.returncode == proc.returncode, again.stdout[-3000:] + again.stderr[-3000:]
    assert "transfer runs: ok 0, diverged 0, failed 0;" in again.stdout and "get seed 3 (look 2" in again.stdout
    assert sorted(pd.read_parquet(path).trial_id) == sorted(trials.trial_id)
