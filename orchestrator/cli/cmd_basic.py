"""Sub-commands that need no Ray: coord-check, train, fetch-data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.errors import BadInput


def _trainer_config(overrides: list[str], **defaults):
    """TrainerConfig from ``key=value`` overrides (unknown keys and bad values are BadInput)."""
    from orchestrator.engine.preflight import check_local_device
    from trainers import TrainerConfig

    try:
        base = OmegaConf.structured(TrainerConfig())
        merged = OmegaConf.merge(base, defaults, OmegaConf.from_dotlist(list(overrides)))
        cfg = TrainerConfig(**OmegaConf.to_container(merged))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0]
        raise BadInput(f"{key}: {msg}" if key else msg) from None
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    check_local_device([cfg.device], "device")
    return cfg


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need positive integers")
    return values


# ---- coord-check -------------------------------------------------------------
def _add_coord(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm",
        default=None,
        help="bp, pc, tp or one a plugin registers (default bp); with --plot a comma-separated list (default bp,pc,tp)",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="run SP and muP for each algorithm and write one figure, SP beside muP per algorithm, "
        "one panel per step (coord_check.png and .svg)",
    )
    p.add_argument("--parametrization", default="mup", help="sp or mup (default mup)")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam (default sgd)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.1 for SGD, 0.003 for Adam)")
    p.add_argument(
        "--widths",
        type=_int_list,
        default=[64, 128, 256, 512, 1024, 2048],
        help="comma-separated widths (default 64,...,2048)",
    )
    p.add_argument("--base-width", type=int, default=64, help="base width (default 64)")
    p.add_argument("--steps", type=int, default=3, help="training steps (default 3)")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument(
        "--plain-targets",
        action="store_true",
        help="train on y instead of y + f_0(x) (the initial error then differs across widths)",
    )
    p.add_argument(
        "--target-mean",
        type=float,
        default=0.0,
        dest="target_mean",
        help="add this to every target, so biases (bias=true) get a gradient from step 1 (default 0)",
    )
    p.add_argument("--tolerance", type=float, default=0.15, help="muP passes when every |slope| is below this")
    p.add_argument("--out", default=None, help="output directory (default results/coord_check/<setting>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any TrainerConfig field, e.g. gamma_bar_L=-1")


def _coord_verdict(cc, cfg, tolerance: float) -> tuple[bool, str]:
    """μP: every moving layer's |slope| below ``tolerance``; SP: the output's slope above 0.5."""
    if cfg.parametrization == "mup":
        worst = cc.max_abs_slope()
        return worst < tolerance, f"muP max |slope| = {worst:.3f} (tolerance {tolerance})"
    s = cc.slopes[cc.slopes.layer == f"layers.{cfg.depth - 1}"].slope.min()
    return s > 0.5, f"SP output slope {s:.3f} (expected > 0.5: SP's output blows up with width)"


def _measure(cfg, args: argparse.Namespace):
    """The coordinate check of ``cfg`` with the command line's widths, steps, seeds and targets."""
    from trainers import coord_check

    return coord_check(
        cfg,
        widths=args.widths,
        steps=args.steps,
        seeds=args.seeds,
        equalize_error=not args.plain_targets,
        target_mean=args.target_mean,
    )


def _check_targets(cfg, args: argparse.Namespace) -> None:
    """The coordinate check's regression targets need loss=mse (equalised error, --target-mean)."""
    if cfg.loss == "ce" and (args.target_mean or not args.plain_targets):
        what = f"--target-mean={args.target_mean:g}" if args.target_mean else "the equalised error (y + f_0(x))"
        raise BadInput(f"loss=ce: {what} needs loss=mse (give --plain-targets for cross-entropy)")


# algorithm -> defaults of the --plot figure (the coordinate-check tests' settings); overrides win
PLOT_DEFAULTS = {"tp": {"target_step": 1.0}}


def _run_coord_grid(args: argparse.Namespace, lr: float) -> int:
    """``coord-check --plot``: SP and μP for every algorithm, one figure, one Parquet of both."""
    import pandas as pd

    from analysis import plot_coord_grid
    from analysis.io import write_parquet_atomic

    algorithms = [a.strip() for a in (args.algorithm or "bp,pc,tp").split(",") if a.strip()]
    cfgs = {
        (alg, par): _trainer_config(
            args.overrides,
            **{
                **PLOT_DEFAULTS.get(alg, {}),
                "algorithm": alg,
                "parametrization": par,
                "optimizer": args.optimizer,
                "lr": lr,
                "base_width": args.base_width,
                "dtype": "float64",
            },
        )
        for alg in algorithms
        for par in ("sp", "mup")
    }
    for cfg in cfgs.values():
        _check_targets(cfg, args)
    out = Path(args.out or f"results/coord_check/{'_'.join(algorithms)}_{args.optimizer}")
    tables, slopes, ok = [], [], True
    for (alg, par), cfg in cfgs.items():
        t0 = time.perf_counter()
        cc = _measure(cfg, args)
        passed, line = _coord_verdict(cc, cfg, args.tolerance)
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}: {alg} {par}: {line} ({time.perf_counter() - t0:.1f}s)")
        tables.append(cc.table.assign(algorithm=alg, parametrization=par))
        slopes.append(cc.slopes.assign(algorithm=alg, parametrization=par))
    table, slopes = pd.concat(tables, ignore_index=True), pd.concat(slopes, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, out / "coord_check.parquet")
    write_parquet_atomic(slopes, out / "slopes.parquet")
    targets = "plain targets" if args.plain_targets else "targets y + f_0(x)"
    title = (
        f"coordinate check, {args.optimizer} lr {lr:g}, {targets}, seeds {args.seeds}"
        + (f", target mean {args.target_mean:g}" if args.target_mean else "")
        + (f", {' '.join(args.overrides)}" if args.overrides else "")
    )
    paths = plot_coord_grid(table, slopes, out / "coord_check.png", title=title)
    print(f"wrote {out / 'coord_check.parquet'}, {out / 'slopes.parquet'}, " + ", ".join(map(str, paths)))
    return 0 if ok else 1


def _run_coord(args: argparse.Namespace) -> int:
    from analysis import plot_coord_check
    from analysis.io import write_parquet_atomic

    lr = args.lr if args.lr is not None else (0.003 if args.optimizer == "adam" else 0.1)
    if args.steps <= 0:
        raise BadInput(f"--steps={args.steps} must be positive")
    if args.plot:
        return _run_coord_grid(args, lr)
    if args.algorithm and "," in args.algorithm:
        raise BadInput(f"--algorithm={args.algorithm!r}: a list needs --plot")
    cfg = _trainer_config(
        args.overrides,
        algorithm=args.algorithm or "bp",
        parametrization=args.parametrization,
        optimizer=args.optimizer,
        lr=lr,
        base_width=args.base_width,
        dtype="float64",
    )
    _check_targets(cfg, args)
    name = f"{cfg.algorithm}_{cfg.parametrization}_{cfg.optimizer}"
    out = Path(args.out or f"results/coord_check/{name}")
    t0 = time.perf_counter()
    cc = _measure(cfg, args)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(cc.table, out / "coord_check.parquet")
    write_parquet_atomic(cc.slopes, out / "slopes.parquet")
    targets = "plain targets" if args.plain_targets else "initial error equalised (targets y + f_0(x))"
    png = plot_coord_check(cc.table, cc.slopes, out / "coord_check.png", title=f"{name}, {targets}")
    print(f"coord check {name}: widths {args.widths}, lr {lr}, {targets}, {time.perf_counter() - t0:.1f}s")
    print(cc.slopes.pivot(index="layer", columns="step", values="slope").round(3).to_string())
    still = cc.slopes[~cc.slopes.moved]
    for _, r in still.iterrows():
        print(f"  {r.layer} does not move at step {r.step} (not fitted)")
    ok, line = _coord_verdict(cc, cfg, args.tolerance)
    print(f"{'PASS' if ok else 'FAIL'}: {line}")
    print(f"wrote {out / 'coord_check.parquet'} and {png}")
    return 0 if ok else 1


# ---- train -------------------------------------------------------------------
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    p.add_argument(
        "--subset", type=int, default=10000, help="training images, first N/10 per class (default 10000; 0 = all)"
    )
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="any TrainerConfig field, e.g. algorithm=pc width=512"
    )


def _run_train(args: argparse.Namespace) -> int:
    import torch

    from trainers import DataError, load_fashion_mnist, make_trainer, train

    cfg = _trainer_config(args.overrides)
    if args.epochs <= 0 or args.batch_size <= 0 or args.subset < 0:
        raise BadInput("--epochs, --batch-size must be positive and --subset non-negative")
    try:
        data = load_fashion_mnist(subset=args.subset or None, device=cfg.torch_device, dtype=cfg.torch_dtype)
    except DataError as exc:
        raise BadInput(str(exc)) from None
    torch.manual_seed(cfg.seed)
    trainer = make_trainer(cfg, data.input_dim, data.output_dim)
    print(
        f"training {cfg.algorithm}/{cfg.parametrization} width {cfg.width} lr {cfg.lr} on "
        f"{len(data.x_train)} Fashion-MNIST images, {args.epochs} epoch(s)"
    )

    def show(row):
        print(
            f"  epoch {row['epoch']}: train loss {row['train_loss']:.4f}  test loss {row['test_loss']:.4f}  "
            f"test acc {row['test_acc']:.4f}  ({row['wall_s']:.1f}s){'  DIVERGED' if row['diverged'] else ''}"
        )
        sys.stdout.flush()

    hist = train(trainer, data, args.epochs, args.batch_size, seed=cfg.seed, on_epoch=show)
    return 1 if hist[-1]["diverged"] else 0


# ---- fetch-data ----------------------------------------------------------------
def _add_fetch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="download into this directory (default: the user cache)")


def _run_fetch(args: argparse.Namespace) -> int:
    from trainers import DataError, download_fashion_mnist, find_fashion_mnist

    try:
        where = find_fashion_mnist() if args.dir is None else download_fashion_mnist(args.dir)
    except DataError:
        try:
            where = download_fashion_mnist(args.dir)
        except DataError as exc:
            raise BadInput(str(exc)) from None
    print(f"Fashion-MNIST: {where}")
    return 0


COMMANDS = {
    "coord-check": (
        "Coordinate check: per-layer feature change against width (slopes near 0 under muP).",
        _add_coord,
        _run_coord,
    ),
    "train": ("Train one network on Fashion-MNIST and print its learning curve.", _add_train, _run_train),
    "fetch-data": (
        "Find Fashion-MNIST on disk, or download it (checksummed) into the user cache.",
        _add_fetch,
        _run_fetch,
    ),
}
