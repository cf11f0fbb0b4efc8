"""Theory measurements as commands: `mutransfer pc-geometry` and `mutransfer alignment`.

Both run in this process (no Ray), write Parquet and a PNG under ``--out`` and print a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from orchestrator.errors import BadInput

NETWORK_CHOICES = {"linear": ("linear",), "tanh": ("tanh",), "both": ("linear", "tanh")}
GAMMA_BARS = (0.0, -1.0)  # the PC tables that exist
ALIGNMENT_SETTINGS = (("bp", "sp"), ("bp", "mup"), ("tp", "sp"), ("tp", "mup"))


def _list(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{what}={text!r} is not a comma-separated list") from None
    if not values:
        raise BadInput(f"{what}={text!r} is empty")
    return values


def _widths(text: str, what: str = "--widths") -> list[int]:
    values = _list(text, int, what)
    if min(values) <= 0:
        raise BadInput(f"{what}={text!r}: widths must be positive integers")
    return values


def _prepare_out(out: str) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out={out!r} exists and is not a directory")
    return path


# ---- pc-geometry --------------------------------------------------------------------
def _add_geometry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--widths", default=None, help="comma-separated widths (default 64,...,1024; with --gamma-L-c 64,128,256)"
    )
    p.add_argument(
        "--gamma-L-c",
        default=None,
        dest="gamma_L_c",
        help="after muP training, sweep γ_L = c·m over these c (e.g. 1e-2,1e-1,1,1e1,1e2,1e3,1e4): "
        "PC's converged update against BP's gradient and Gauss-Newton directions, in parameter "
        "and function space (pc_interpolation.parquet/.png)",
    )
    p.add_argument("--batch-sizes", default="32,128", help="with --gamma-L-c: batch sizes (default 32,128)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="with --gamma-L-c: full-batch BP muP SGD steps before measuring (default 200)",
    )
    p.add_argument("--train-lr", type=float, default=0.2, help="with --gamma-L-c: their learning rate (default 0.2)")
    p.add_argument(
        "--gamma-bar-L",
        default="0,-1",
        dest="gamma_bar_L",
        help="output energy weight exponents γ̄_L, γ_L = m^(−γ̄_L): 0 and/or -1 (default 0,-1)",
    )
    p.add_argument(
        "--steps",
        default="1,5,20,100,inf",
        help="inference step counts T; 'inf' = converged inference (default 1,5,20,100,inf)",
    )
    p.add_argument("--network", default=None, help="linear, tanh or both (default both; with --gamma-L-c tanh)")
    p.add_argument("--parametrization", default="mup", help="mup or sp (default mup)")
    p.add_argument("--seeds", default="0", help="comma-separated initialisation seeds (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="teacher-student batch size (default 32)")
    p.add_argument(
        "--converged-steps",
        type=int,
        default=600,
        help="inference steps that stand for 'inf' in the tanh MLP (default 600)",
    )
    p.add_argument("--out", default="results/theory/pc_geometry", help="output directory")


def _run_interpolation(args: argparse.Namespace) -> int:
    """``pc-geometry --gamma-L-c``: cosines against c after μP training (``trainers.pc_interpolation``)."""
    widths = _widths(args.widths or "64,128,256")
    cs = _list(args.gamma_L_c, float, "--gamma-L-c")
    if min(cs) <= 0:
        raise BadInput(f"--gamma-L-c={args.gamma_L_c!r}: c must be positive")
    sizes = _widths(args.batch_sizes, "--batch-sizes")
    seeds = _list(args.seeds, int, "--seeds")
    if args.train_steps < 0 or not args.train_lr > 0:
        raise BadInput("--train-steps must be >= 0 and --train-lr > 0")
    args.network = args.network or "tanh"
    if args.network not in ("tanh", "linear"):
        raise BadInput(f"--network={args.network!r}: --gamma-L-c takes tanh or linear")
    out = _prepare_out(args.out)

    import torch

    from analysis.io import write_parquet_atomic
    from analysis.theory_plots import plot_pc_interpolation
    from trainers import pc_interpolation

    torch.set_num_threads(1)
    start = time.perf_counter()
    table = pc_interpolation(
        widths=widths,
        cs=cs,
        seeds=seeds,
        batch_sizes=sizes,
        train_steps=args.train_steps,
        train_lr=args.train_lr,
        activation=args.network,
    )
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, out / "pc_interpolation.parquet")
    png = plot_pc_interpolation(table, out / "pc_interpolation.png")
    cols = ["cos_bp", "cos_gn", "cos_gn_relaxed", "cos_gn_param", "fcos_pc"]
    stats = table.groupby(["batch_size", "width", "c"])[cols].agg(["mean", "min", "max"])
    print(
        f"PC's converged update after {args.train_steps} BP muP steps, γ_L = c·m, {len(seeds)} seed(s): "
        "mean [min, max] over seeds"
    )
    show = stats.xs("mean", axis=1, level=1).round(4).astype(str)
    for col in cols:
        show[col] += (
            " [" + stats[(col, "min")].round(4).astype(str) + ", " + stats[(col, "max")].round(4).astype(str) + "]"
        )
    print(show.to_string())
    refs = table.groupby(["batch_size", "width"])[["loss_trained", "fcos_bp", "fcos_gn", "cos_bp_gn"]].mean()
    print("references (c-independent, mean over seeds): trained loss, cos(J·d, r) of BP and activity GN, cos(BP, GN)")
    print(refs.round(4).to_string())
    print(f"largest relative inference residual {table.relax_residual.max():.1e}")
    print(f"{len(table)} rows in {wall:.1f} s -> {out / 'pc_interpolation.parquet'}, {png}")
    return 0


def _run_geometry(args: argparse.Namespace) -> int:
    from trainers import check_steps, pc_geometry

    if args.gamma_L_c is not None:
        return _run_interpolation(args)
    widths = _widths(args.widths or "64,128,256,512,1024")
    args.network = args.network or "both"
    gbars = _list(args.gamma_bar_L, float, "--gamma-bar-L")
    bad = [g for g in gbars if g not in GAMMA_BARS]
    if bad:
        raise BadInput(f"--gamma-bar-L={bad[0]:g} is not one of 0, -1 (the PC tables that exist)")
    try:
        steps = check_steps(args.steps.split(","))
    except ValueError as exc:
        raise BadInput(f"--steps: {exc}") from None
    if args.network not in NETWORK_CHOICES:
        raise BadInput(f"--network={args.network!r} is not one of {', '.join(NETWORK_CHOICES)}")
    if args.parametrization not in ("mup", "sp"):
        raise BadInput(f"--parametrization={args.parametrization!r} is not one of mup, sp")
    seeds = _list(args.seeds, int, "--seeds")
    if args.batch_size <= 0 or args.converged_steps <= 1:
        raise BadInput("--batch-size must be > 0 and --converged-steps > 1")
    out = _prepare_out(args.out)

    import torch

    from analysis.io import write_parquet_atomic
    from analysis.theory_plots import plot_pc_geometry

    torch.set_num_threads(1)  # small matrices: one thread is faster on a shared machine
    start = time.perf_counter()
    table = pc_geometry(
        widths=widths,
        gamma_bar_Ls=gbars,
        steps=steps,
        networks=NETWORK_CHOICES[args.network],
        seeds=seeds,
        batch_size=args.batch_size,
        converged_steps=args.converged_steps,
        parametrization=args.parametrization,
    )
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, out / "pc_geometry.parquet")
    png = plot_pc_geometry(table, out / "pc_geometry.png")
    _print_geometry(table, args.parametrization)
    print(f"{len(table)} rows in {wall:.1f} s -> {out / 'pc_geometry.parquet'}, {png}")
    return 0


def _print_geometry(table, parametrization: str) -> None:
    import pandas as pd

    from trainers import loglog_slope

    allp = table[table.layer == "all"]
    mean = allp.groupby(["network", "gamma_bar_L", "steps", "width"])[["cos_bp", "cos_gn", "cos_gn_param"]].mean()
    print(
        f"PC update vs BP's gradient (cos_bp) and vs the activity-space Gauss-Newton direction "
        f"(cos_gn: e_L = (Σ_l<L γ_L/γ_l J_l J_lᵀ)^-1 r per sample, e_l = γ_L/γ_l J_lᵀ e_L), all layers, "
        f"{parametrization}; slope = d log2(1 − cos_bp) / d log2 width"
    )
    rows = []
    for (net, g, s), grp in mean.groupby(level=[0, 1, 2], sort=False):
        grp = grp.droplevel([0, 1, 2])
        row = {"network": net, "gamma_bar_L": g, "T": "converged" if s == "inf" else s}
        for w, r in grp.iterrows():
            row[f"cos_bp@{w}"] = round(r.cos_bp, 4)
        for w, r in grp.iterrows():
            row[f"cos_gn@{w}"] = round(r.cos_gn, 4)
        row["slope"] = round(loglog_slope(grp.index, 1 - grp.cos_bp), 2)
        rows.append(row)
    order = {"converged": 1e9}
    df = pd.DataFrame(rows)
    df["_k"] = [order.get(t, float(t) if t != "converged" else 1e9) for t in df["T"]]
    df = df.sort_values(["network", "gamma_bar_L", "_k"], ascending=[True, False, True]).drop(columns="_k")
    print(df.to_string(index=False))
    lin = table[(table.network == "linear") & (table.layer == "all")]
    if not lin.empty:
        c = lin.groupby(["gamma_bar_L", "width"]).coupling_norm.mean().unstack()
        print("deep linear network, ‖C‖₂ (coupling; → 0 means PC → gradient):")
        print(c.round(3).to_string())


# ---- alignment ------------------------------------------------------------------------
# (algorithm, parametrization): "ntk" is the kernel-regime control, BP with trainers.NTK_TABLE
ALIGNMENT_SETTINGS = (("bp", "sp"), ("bp", "mup"), ("bp", "ntk"), ("pc", "mup"), ("tp", "sp"), ("tp", "mup"))
ALGORITHM_KEYS = {
    "tp": {"target_step": 1.0, "feedback": "linear", "feedback_lr": 0.01},
    "pc": {"inference_steps": 20, "gamma_bar_L": 0.0},
}


def _add_alignment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated widths (default 64,...,1024)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated initialisation seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=3, help="training steps; every step is measured (default 3)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate η (default 0.1)")
    p.add_argument(
        "--settings",
        default=None,
        help="comma-separated ALGORITHM:TABLE, TABLE one of sp, mup, ntk (trainers.NTK_TABLE) or a table file "
        "(YAML, docs/EXTENDING.md; labelled by its file name), e.g. tp:mup,tp:ntk,tp:search_spaces/tables/"
        "tp_ntk_sgd.yaml (default bp:sp,bp:mup,bp:ntk,pc:mup,tp:sp,tp:mup)",
    )
    p.add_argument("--out", default="results/theory/alignment", help="output directory")


def _regime(row) -> str:
    """Feature learning (μP) or kernel regime, from how the last hidden features' change scales."""
    if row.dphi_slope_hi < -0.25:
        return "kernel (features freeze)"
    if abs(row.dphi_slope_lo) < 0.2 and abs(row.dphi_slope_hi) < 0.2:
        return "feature learning"
    return "features grow" if row.dphi_slope > 0.1 else "unclear"


def _alignment_settings(text: str | None) -> list[tuple[str, str, object]]:
    """``--settings``: (algorithm, label, table or None) per entry; a table file is read, not registered."""
    from trainers import NTK_TABLE, TRAINERS, TableFileError, parse_table

    if text is None:
        return [(a, p, NTK_TABLE if p == "ntk" else None) for a, p in ALIGNMENT_SETTINGS]
    out = []
    for item in _list(text, str, "--settings"):
        alg, sep, par = (part.strip() for part in item.partition(":"))
        if not sep or alg not in TRAINERS or not par:
            raise BadInput(f"--settings: {item!r} is not ALGORITHM:TABLE with ALGORITHM one of {', '.join(TRAINERS)}")
        if par in ("sp", "mup"):
            out.append((alg, par, None))
        elif par == "ntk":
            out.append((alg, par, NTK_TABLE))
        else:
            import yaml

            path = Path(par)
            try:
                doc = yaml.safe_load(path.read_text())
                table_alg, _key, table = parse_table(doc, str(path))
            except (OSError, yaml.YAMLError) as exc:
                raise BadInput(f"--settings: {par}: cannot read a table file ({type(exc).__name__})") from None
            except TableFileError as exc:
                raise BadInput(f"--settings: {exc}") from None
            if table_alg != alg:
                raise BadInput(f"--settings: {par} is a {table_alg} table, not {alg}'s")
            out.append((alg, path.stem, table))
    return out


def _run_alignment(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from trainers import TrainerConfig, alignment_profile, loglog_slope, omega_intervals, using_table

    settings = _alignment_settings(args.settings)
    widths = _widths(args.widths)
    if len(widths) < 2:
        raise BadInput(f"--widths={args.widths!r}: need at least two widths to fit ω_L")
    seeds = _list(args.seeds, int, "--seeds")
    if args.steps <= 0 or not args.lr > 0:
        raise BadInput("--steps must be a positive integer and --lr > 0")
    out = _prepare_out(args.out)

    import pandas as pd
    import torch

    from analysis.io import write_parquet_atomic
    from analysis.theory_plots import plot_alignment

    torch.set_num_threads(1)
    start = time.perf_counter()
    profiles, omegas, fits = [], [], []
    for alg, par, table in settings:
        cfg = TrainerConfig(
            algorithm=alg,
            parametrization=par if par in ("sp", "mup") else "mup",
            lr=args.lr,
            dtype="float64",
            **ALGORITHM_KEYS.get(alg, {}),
        )
        with using_table(cfg, table) if table is not None else nullcontext():  # every trainer takes it so
            prof = alignment_profile(cfg, widths=widths, steps=args.steps, seeds=seeds)
        profiles.append(prof.assign(algorithm=alg, parametrization=par))
        omegas.append(omega_intervals(prof).assign(algorithm=alg, parametrization=par))
        last = prof[(prof.layer == f"layers.{cfg.depth - 1}") & (prof.step == args.steps)]
        g = last.groupby("width", sort=True)[["ratio", "rms_product"]].mean()
        fits.append(
            {
                "algorithm": alg,
                "parametrization": par,
                "omega": loglog_slope(g.index, g.ratio),
                "product_slope": loglog_slope(g.index, g.rms_product),
                "widths": ",".join(map(str, widths)),
                "seeds": len(seeds),
                "steps": args.steps,
                "lr": args.lr,
            }
        )
    wall = time.perf_counter() - start
    profile, omega, fits = (
        pd.concat(profiles, ignore_index=True),
        pd.concat(omegas, ignore_index=True),
        pd.DataFrame(fits),
    )
    table = profile[
        profile.layer.eq(profile.groupby(["algorithm", "parametrization"]).layer.transform("max"))
        & (profile.step == args.steps)
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table.reset_index(drop=True), out / "alignment.parquet")
    write_parquet_atomic(fits, out / "alignment_fits.parquet")
    write_parquet_atomic(profile, out / "alignment_profile.parquet")
    write_parquet_atomic(omega, out / "alignment_omega.parquet")
    png = plot_alignment(table, fits, out / "alignment.png")
    print(
        f"alignment per layer, fitted per (seed, step) over widths {widths}: mean [min, max] of {len(seeds)} "
        f"seed(s) x {args.steps} step(s); ω_l = d log r / d log n (LLN: 1, CLT: 1/2); product = RMS(W_l Δφ), "
        "dphi = RMS(Δφ) of the layer's input"
    )
    show = omega[["algorithm", "parametrization", "layer"]].copy()
    for k in ("omega", "product_slope", "dphi_slope"):
        show[k] = [
            f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in zip(omega[k], omega[f"{k}_lo"], omega[f"{k}_hi"])
        ]
    print(show.to_string(index=False))
    last = omega[omega.layer.eq(omega.groupby(["algorithm", "parametrization"]).layer.transform("max"))]
    print(
        "regime (from the last hidden features' change): "
        + "; ".join(f"{r.algorithm} {r.parametrization}: {_regime(r)}" for r in last.itertuples())
    )
    print(fits[["algorithm", "parametrization", "omega", "product_slope"]].round(3).to_string(index=False))
    print(
        f"{len(profile)} rows in {wall:.1f} s -> {out / 'alignment_omega.parquet'}, {out / 'alignment_profile.parquet'}, "
        f"{out / 'alignment.parquet'}, {png}"
    )
    return 0


COMMANDS = {
    "pc-geometry": (
        "Cosine of PC's update with BP's gradient and with a Gauss-Newton direction against width "
        "(deep linear network and tanh MLP; γ̄_L = 0, -1; several T). Parquet + PNG.",
        _add_geometry,
        _run_geometry,
    ),
    "alignment": (
        "Alignment exponent ω_l per layer against width (intervals over seeds and steps) for BP, PC "
        "and TP under SP and muP, and an NTK-style kernel-regime control. Parquet + PNG.",
        _add_alignment,
        _run_alignment,
    ),
}
