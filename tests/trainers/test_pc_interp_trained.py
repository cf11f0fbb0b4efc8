"""trainers._pc_interp_trained: PC's update against BP's gradient after PC training (issue 30)."""

import numpy as np
import pytest

from trainers import pc_interpolation
from trainers._pc_interp_trained import main, pc_interpolation_pc_trained


def test_at_initialisation_it_is_pc_interpolation_without_training():
    """train_steps=0: the BP copy holds PC's initial weights, so the cosines equal pc_interpolation's at init."""
    ours = pc_interpolation_pc_trained(widths=(64, 128), seeds=(0,), cs=(1e-3, 1.0), train_steps=0)
    ref = pc_interpolation(widths=(64, 128), seeds=(0,), cs=(1e-3, 1.0), batch_sizes=(32,), train_steps=0)
    merged = ours.merge(ref, on=["width", "seed", "c"], suffixes=("", "_ref"))
    assert len(merged) == 4
    np.testing.assert_allclose(merged.cos_bp, merged.cos_bp_ref, atol=1e-9)
    np.testing.assert_allclose(merged.loss_trained, merged.loss_init)
    assert (ours[ours.c == 1e-3].cos_bp > 0.999).all()  # small γ_L: PC's update is BP's gradient


def test_pc_training_lowers_the_loss_and_the_relaxation_converges(tmp_path, capsys):
    out = tmp_path / "pci" / "t.parquet"
    argv = ["--widths", "64,128", "--seeds", "0", "--depths", "3,5", "--train-steps", "20", "--out", str(out)]
    assert main(argv) == 0
    import pandas as pd

    t = pd.read_parquet(out)
    assert len(t) == 4 and set(t.depth) == {3, 5} and set(t.inference_steps) == {6, 10}  # T = 2L
    assert (~t.train_diverged).all() and (t.loss_trained < t.loss_init).all()
    assert (t.relax_residual < 1e-6).all()
    assert ((t.one_minus_cos > 0) & (t.one_minus_cos < 1)).all()
    np.testing.assert_allclose(t.gamma_L, t.width / 64)  # c = 1: γ_L = m
    assert "1 − cos(PC, BP) after 20 PC μP steps" in capsys.readouterr().out


def test_a_diverged_training_leaves_nan_cosines():
    t = pc_interpolation_pc_trained(widths=(64,), seeds=(0,), train_steps=5, train_lr=1e6)
    assert t.train_diverged.all() and t.cos_bp.isna().all()
    with pytest.raises(SystemExit):
        main(["--widths", "64"])  # --out is required
