"""PC's update against BP's gradient after *PC* training (issue 30's claim "PC at γ̄_L = −1 stays away
from the gradient").

:func:`trainers.pc_interpolation` trains the network with BP before measuring; here it is trained with
PC itself (μP, SGD, γ̄_L = −1 by default, T = 2L parallel inference steps, full batch on the
teacher-student batch), so the measurement sees the weights PC's own dynamics reach. At the trained
weights, for each c the inference equilibrium with hidden γ_l = 1 and γ_L = c·m is solved
(:func:`trainers._pc_interp.relax`) and PC's update there is compared with BP's negative gradient at the
same weights (``cos_bp``; ``one_minus_cos`` = 1 − cos_bp) and with the activity-space Gauss-Newton
direction at the relaxed activities (``cos_gn_relaxed``). The paper's claim at γ̄_L = −1 (c = 1) is
that 1 − cos stays away from 0 as width grows; at γ̄_L = 0 (γ_L = 1, i.e. c = 1/m) it falls.

    python -m trainers._pc_interp_trained --widths 64,128,256,512,1024,2048 --seeds 0,1,2 --depths 3,5 \\
        --out docs/theory/pc_interpolation_pc/pc_interpolation_pc.parquet

(trainers imports nothing of the package's other layers, so this writes Parquet with pandas directly.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import torch

from ._base import make_trainer
from ._config import TrainerConfig
from ._data import make_teacher_student
from ._pc_interp import pc_update_at, relax
from ._pc_theory import activity_gauss_newton_direction, direction_cosines


def pc_interpolation_pc_trained(
    widths: Sequence[int] = (64, 256, 1024),
    seeds: Sequence[int] = (0, 1, 2),
    depths: Sequence[int] = (3,),
    cs: Sequence[float] = (1.0,),
    batch_size: int = 32,
    train_steps: int = 200,
    train_lr: float = 0.2,
    train_gamma_bar_L: float = -1.0,
    inference_steps: int | None = None,
    inference_lr: float = 0.1,
    activation: str = "tanh",
    tol: float = 1e-9,
) -> pd.DataFrame:
    """One row per (depth, width, seed, c) after ``train_steps`` full-batch PC μP SGD steps.

    Args:
        widths, seeds, depths: the networks (base width 64, float64).
        cs: γ_L = c·m at the measurement (hidden γ_l = 1); c = 1 is γ̄_L = −1.
        batch_size: the teacher-student batch (d = 32, C = 10), also the training set.
        train_steps, train_lr: PC training before the measurement (0: at initialisation).
        train_gamma_bar_L: the PC table trained with (γ_L = m^(−γ̄_L)).
        inference_steps: T of the training's parallel inference (default 2L).
        inference_lr: its step size.
        activation, tol: the network's nonlinearity; the relative gradient tolerance of the relaxation.

    Returns:
        Columns ``depth, width, seed, batch_size, train_steps, train_gamma_bar_L, inference_steps,
        loss_init, loss_trained, train_diverged, c, gamma_L, relax_iters, relax_residual, cos_bp,
        one_minus_cos, cos_gn_relaxed``. A run whose PC training diverged has NaN cosines.
    """
    data = make_teacher_student(n_train=int(batch_size), n_test=1, seed=7)
    rows = []
    for depth in depths:
        T = int(inference_steps) if inference_steps is not None else 2 * int(depth)
        for width in widths:
            for seed in seeds:
                common = dict(
                    parametrization="mup",
                    dtype="float64",
                    depth=int(depth),
                    width=int(width),
                    activation=activation,
                    seed=int(seed),
                    lr=train_lr,
                    device="cpu",
                )
                pc = make_trainer(
                    TrainerConfig(
                        algorithm="pc",
                        gamma_bar_L=float(train_gamma_bar_L),
                        inference_steps=T,
                        inference_lr=inference_lr,
                        **common,
                    ),
                    data.input_dim,
                    data.output_dim,
                )
                x, y = data.x_train.to(torch.float64), pc.targets(data.y_train).to(torch.float64)
                loss0, diverged = float(pc.evaluate(x, y)["loss"]), False
                for _ in range(int(train_steps)):
                    if pc.step(x, y)["diverged"]:
                        diverged = True
                        break
                # BP at the same weights (same init and multipliers under μP): its gradient is the reference
                bp = make_trainer(TrainerConfig(algorithm="bp", **common), data.input_dim, data.output_dim)
                bp.model.load_state_dict(pc.model.state_dict())
                model, loss = bp.model, float(bp.evaluate(x, y)["loss"])
                base = {
                    "depth": int(depth),
                    "width": int(width),
                    "seed": int(seed),
                    "batch_size": int(batch_size),
                    "train_steps": int(train_steps),
                    "train_gamma_bar_L": float(train_gamma_bar_L),
                    "inference_steps": T,
                    "loss_init": loss0,
                    "loss_trained": loss,
                    "train_diverged": diverged,
                }
                grad = None if diverged else bp.update_direction(x, y)
                ones = [1.0] * (int(depth) - 1)
                for c in cs:
                    gammas = ones + [float(c) * width / 64]
                    row = {**base, "c": float(c), "gamma_L": gammas[-1]}
                    if grad is None:
                        rows.append({**row, "relax_iters": 0, "relax_residual": float("nan"), "cos_bp": float("nan")})
                        continue
                    xs, iters, rel = relax(model, x, y, gammas, tol=tol)
                    d = pc_update_at(model, x, xs, y, gammas)
                    gnr = activity_gauss_newton_direction(model, x, y, gammas, hidden=xs)
                    rows.append(
                        {
                            **row,
                            "relax_iters": iters,
                            "relax_residual": rel,
                            "cos_bp": direction_cosines(d, grad)["all"],
                            "cos_gn_relaxed": direction_cosines(d, gnr)["all"],
                        }
                    )
    out = pd.DataFrame(rows)
    out["one_minus_cos"] = 1.0 - out["cos_bp"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers._pc_interp_trained``: the table of :func:`pc_interpolation_pc_trained` as Parquet."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m trainers._pc_interp_trained", description=__doc__.split("\n")[0])
    p.add_argument("--widths", default="64,128,256,512,1024,2048")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--depths", default="3,5")
    p.add_argument("--cs", default="1", help="γ_L = c·m at the measurement (default 1: γ̄_L = −1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--train-lr", type=float, default=0.2)
    p.add_argument("--train-gamma-bar-L", type=float, default=-1.0, dest="train_gamma_bar_L")
    p.add_argument("--inference-steps", type=int, default=None, help="training's T (default 2L)")
    p.add_argument("--out", required=True, help="Parquet file to write")
    a = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",") if v.strip()]  # noqa: E731
    torch.set_num_threads(1)
    start = time.perf_counter()
    table = pc_interpolation_pc_trained(
        widths=ints(a.widths),
        seeds=ints(a.seeds),
        depths=ints(a.depths),
        cs=[float(v) for v in a.cs.split(",") if v.strip()],
        batch_size=a.batch_size,
        train_steps=a.train_steps,
        train_lr=a.train_lr,
        train_gamma_bar_L=a.train_gamma_bar_L,
        inference_steps=a.inference_steps,
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out)
    stats = table.groupby(["depth", "c", "width"])[["one_minus_cos", "loss_trained"]].agg(["mean", "min", "max"])
    print(
        f"1 − cos(PC, BP) after {a.train_steps} PC μP steps (γ̄_L = {a.train_gamma_bar_L:g}), mean [min, max] over seeds"
    )
    print(stats.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"{len(table)} rows in {time.perf_counter() - start:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
