"""Sweep config: YAML + dotlist merging, grid expansion, trial ids, and the errors for bad input."""

import math
import textwrap

import pytest

from orchestrator.errors import BadInput
from orchestrator.spec.config import load_sweep, trial_id

GOOD = """
name: t
trainer: {algorithm: bp, depth: 3}
data: {dataset: fmnist, subset: 200, test_subset: 100}
train: {epochs: 1, batch_size: 32}
grid:
  parametrization: [sp, mup]
  width: [16, 32, 64]
  lr: {log2: [-6, 0, 2]}
  seed: [0, 1]
"""


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_grid_is_the_cartesian_product_with_log2_ranges(tmp_path):
    sweep = load_sweep(_write(tmp_path, GOOD))
    assert len(sweep.trials) == 2 * 3 * 4 * 2
    lrs = sorted({t.trainer["lr"] for t in sweep.trials})
    assert lrs == [2.0**k for k in (-6, -4, -2, 0)]
    assert {t.trainer["depth"] for t in sweep.trials} == {3}
    assert sweep.swept_keys == ("parametrization", "width", "lr", "seed")
    assert len({t.trial_id for t in sweep.trials}) == len(sweep.trials)


def test_overrides_merge_like_hydra(tmp_path):
    sweep = load_sweep(_write(tmp_path, GOOD), ["grid.width=[128]", "train.epochs=3", "trainer.depth=4"])
    assert {t.trainer["width"] for t in sweep.trials} == {128}
    assert {t.train["epochs"] for t in sweep.trials} == {3}
    assert {t.trainer["depth"] for t in sweep.trials} == {4}


def test_trial_ids_are_deterministic_and_follow_the_config(tmp_path):
    a = load_sweep(_write(tmp_path, GOOD))
    b = load_sweep(_write(tmp_path, GOOD, "copy.yaml"), ["name=other"])
    assert [t.trial_id for t in a.trials] == [t.trial_id for t in b.trials]
    c = load_sweep(_write(tmp_path, GOOD), ["train.epochs=2"])
    assert not {t.trial_id for t in a.trials} & {t.trial_id for t in c.trials}
    t = a.trials[0]
    assert trial_id(t.trainer, t.data, t.train) == t.trial_id
    assert trial_id({**t.trainer, "lr": t.trainer["lr"] * 2}, t.data, t.train) != t.trial_id


def test_execution_keys_do_not_change_identity_or_ids(tmp_path):
    a = load_sweep(_write(tmp_path, GOOD))
    b = load_sweep(_write(tmp_path, GOOD), ["resources.cpu=2", "max_concurrent=1"])
    assert a.identity() == b.identity()
    assert [t.trial_id for t in a.trials] == [t.trial_id for t in b.trials]


def test_fractional_gpu_resources_are_accepted(tmp_path):
    s = load_sweep(_write(tmp_path, GOOD), ["resources.gpu=0.25"])
    assert math.isclose(s.config.resources.gpu, 0.25)


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        (GOOD + "grid2: 3\n", [], "unknown key 'grid2' (did you mean 'grid'?)"),
        (GOOD.replace("grid:", "gird:"), [], "unknown key 'gird' (did you mean 'grid'?)"),
        (GOOD.replace("width:", "widht:"), [], "unknown key 'grid.widht'"),
        (GOOD, ["trian.epochs=2"], "unknown key 'trian' (did you mean 'train'?)"),
        (GOOD, ["train.epoch=2"], "unknown key 'train.epoch' (did you mean 'train.epochs'?)"[:25]),
        (GOOD, ["grid.width=[16,abc]"], "grid.width='abc'"),
        (GOOD, ["train.epochs=many"], "epochs"),
        (GOOD, ["grid.width=[0,16]"], "width=0"),
        (GOOD, ["grid.width=[-16]"], "width=-16"),
        (GOOD, ["grid.lr=[0.1,0]"], "lr=0.0 must be > 0"),
        (GOOD, ["grid.lr=[-0.1]"], "lr=-0.1 must be > 0"),
        (GOOD, ["trainer.algorithm=xp"], "algorithm='xp' is not one of bp, pc, tp"),
        (GOOD, ["grid.parametrization=[sp,ntk]"], "parametrization='ntk' is not one of sp, mup"),
        (GOOD, ["grid.width=[]"], "grid.width is empty"),
        (GOOD, ["grid.lr={log2: [2, 0, 1]}"], "grid.lr is empty"),
        ("name: t\ngrid: {}\n", [], "empty grid"),
        ("name: t\n", [], "empty grid"),
        (GOOD, ["metric=tst_loss"], "metric='tst_loss'"),
        (GOOD, ["mode=best"], "mode='best'"),
        (GOOD + "trainer: [1]\n", [], "trainer"),
        ("grid: {width: [16}\n", [], "YAML syntax error"),
        ("grid:\n  width: [16]\n lr: 1\n", [], "line 3"),
    ],
)
def test_bad_input_names_the_file_and_key(tmp_path, text, overrides, needle):
    path = _write(tmp_path, text)
    with pytest.raises(BadInput) as err:
        load_sweep(path, overrides)
    msg = str(err.value)
    assert needle in msg, msg
    assert "\n" not in msg


def test_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        load_sweep(tmp_path / "nope.yaml")


def test_expand_rejects_a_key_in_both_trainer_and_grid(tmp_path):
    with pytest.raises(BadInput, match="both in trainer and in grid"):
        load_sweep(_write(tmp_path, GOOD.replace("depth: 3}", "depth: 3, lr: 0.1}")))


def test_an_override_moves_a_key_between_trainer_and_grid(tmp_path):
    """grid.depth=[3,4] over the file's trainer.depth makes depth an axis (how a sweep grows); and back."""
    axis = load_sweep(_write(tmp_path, GOOD), ["grid.depth=[3,4]"])
    assert "depth" not in axis.config.trainer and {t.trainer["depth"] for t in axis.trials} == {3, 4}
    fixed = load_sweep(_write(tmp_path, GOOD), ["trainer.lr=0.25"])
    assert "lr" not in fixed.config.grid and {t.trainer["lr"] for t in fixed.trials} == {0.25}


@pytest.mark.parametrize(
    "override, hint",
    [
        ("grid.lr={log2:[-4,0,2]}", "in YAML flow style a colon needs a space after it: {log2: [-4, 0, 2]}"),
        ("grid.width=[16,32", "a bracket is not closed"),
    ],
)
def test_an_unparsable_override_is_named_with_its_likely_fix(tmp_path, override, hint):
    with pytest.raises(BadInput) as err:
        load_sweep(_write(tmp_path, GOOD), ["train.epochs=2", override])
    msg = str(err.value)
    assert msg.startswith(f"override {override!r}: ") and hint in msg and "\n" not in msg, msg
    fixed = override.replace(":[", ": [") + ("]" if override.count("[") > override.count("]") else "")
    assert load_sweep(_write(tmp_path, GOOD), ["train.epochs=2", fixed]).trials  # the fix it names works
