"""PC between the gradient and Gauss-Newton after μP training: the equilibrium solver and both ends."""

import pytest

from trainers import TrainerConfig, make_teacher_student, pc_interpolation
from trainers._pc import PCTrainer
from trainers._pc_interp import pc_update_at, relax
from trainers._pc_theory import direction_cosines


@pytest.mark.parametrize("c", [0.3, 1.0])
def test_relax_reaches_the_equilibrium_of_pc_inference(c):
    """The Newton solver's update equals PCTrainer's after 3000 explicit inference steps (γ_L = c·m)."""
    data = make_teacher_student(n_train=8, n_test=1, seed=3)
    cfg = TrainerConfig(
        algorithm="pc",
        parametrization="mup",
        dtype="float64",
        width=128,
        gamma_bar_L=-1.0,
        inference_steps=3000,
        inference_lr=0.1,
        bias=True,
    )
    gammas = (1.0, 1.0, c * cfg.width_mult)
    pc = PCTrainer(cfg, 32, 10, gammas=gammas)
    x, y = data.x_train, pc.targets(data.y_train)
    xs, iters, rel = relax(pc.model, x, y, gammas)
    assert rel < 1e-7 and iters < 50  # float64: the energy stops falling near 1e-9
    cos = direction_cosines(pc.update_direction(x, y), pc_update_at(pc.model, x, xs, y, gammas))
    assert min(cos.values()) > 1 - 1e-9, cos


def test_relax_is_stable_where_explicit_inference_is_not():
    """γ_L = 10⁴·m: 50 explicit inference steps of β = 0.1 oscillate far from the equilibrium (update
    ~2000× too large, cos ≈ 0.1); the solver reaches it (gradient 1e-12 of its start)."""
    data = make_teacher_student(n_train=8, n_test=1, seed=3)
    cfg = TrainerConfig(
        algorithm="pc",
        parametrization="mup",
        dtype="float64",
        width=128,
        gamma_bar_L=-1.0,
        inference_steps=50,
        inference_lr=0.1,
    )
    gammas = (1.0, 1.0, 1e4 * cfg.width_mult)
    pc = PCTrainer(cfg, 32, 10, gammas=gammas)
    x, y = data.x_train, pc.targets(data.y_train)
    xs, _, rel = relax(pc.model, x, y, gammas)
    assert rel < 1e-7
    d, explicit = pc_update_at(pc.model, x, xs, y, gammas), pc.update_direction(x, y)
    norm = lambda u: sum(float(v.pow(2).sum()) for v in u.values()) ** 0.5  # noqa: E731
    assert norm(explicit) > 100 * norm(d) and direction_cosines(explicit, d)["all"] < 0.5


def test_large_c_is_gauss_newton_and_small_c_is_the_gradient_after_training():
    """Widths 64, 128, 2 seeds, 50 BP μP steps: c = 10⁻² gives BP's gradient (cos > 0.999); at c = 10⁴
    PC's cosine with the activity Gauss-Newton direction exceeds its cosine with the gradient by > 0.03."""
    t = pc_interpolation(widths=(64, 128), cs=(1e-2, 1e4), seeds=(0, 1), batch_sizes=(16,), train_steps=50)
    small, large = t[t.c == 1e-2], t[t.c == 1e4]
    assert (small.cos_bp > 0.999).all(), small
    assert (large.cos_gn - large.cos_bp > 0.03).all(), large[["width", "seed", "cos_bp", "cos_gn"]]
    assert (large.cos_gn_relaxed > 0.999).all(), large.cos_gn_relaxed  # the constrained optimum's KKT form
    assert (t.relax_residual < 1e-6).all()
