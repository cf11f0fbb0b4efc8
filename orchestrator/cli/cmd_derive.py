"""`mutransfer derive`: find a μP table by measurement (trainers._derive), print it, write it as YAML."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator.cli.cmd_basic import _int_list, _trainer_config
from orchestrator.errors import BadInput


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algorithm", default="bp", help="bp, pc, tp or one a plugin registers (default bp)")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam (default sgd)")
    p.add_argument(
        "--start", default="sp", help="starting table: sp, mup (the registered ones) or a table file (default sp)"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-4,
        help="learning rate of the measurements: small, so slopes are linear in the exponents (default 1e-4)",
    )
    p.add_argument("--widths", type=_int_list, default=[128, 256, 512, 1024], help="default 128,256,512,1024")
    p.add_argument("--base-width", type=int, default=64, help="base width (default 64)")
    p.add_argument("--steps", type=int, default=2, help="training steps per measurement (default 2)")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="fixed batch size (default 32)")
    p.add_argument("--tolerance", type=float, default=0.2, help="done when every |slope| is below this (default 0.2)")
    p.add_argument(
        "--check-lr",
        type=float,
        default=None,
        help="lr of the confirming coordinate check (default 0.1 for SGD, 0.003 for Adam)",
    )
    p.add_argument(
        "--output-init",
        action="store_true",
        help="also ask the output to be width-independent at init (for a rule whose output init the "
        "changes leave free, as TP's and feedback alignment's)",
    )
    p.add_argument("--out", default=None, help="write the derived table here (YAML, loadable with $MUTRANSFER_TABLES)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any TrainerConfig field, e.g. gamma_bar_L=-1")


def _start_table(spec: str, cfg):
    from trainers import Table, TableFileError, parse_table, resolve_table

    if spec in ("sp", "mup"):
        try:
            return resolve_table(cfg.replace(parametrization=spec))
        except ValueError as exc:
            raise BadInput(f"--start {spec}: {exc}") from None
    import yaml

    path = Path(spec)
    try:
        _, _, table = parse_table(yaml.safe_load(path.read_text()), str(path))
    except OSError as exc:
        raise BadInput(f"--start {spec}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except (TableFileError, yaml.YAMLError) as exc:
        raise BadInput(f"--start {str(exc).splitlines()[0]}") from None
    sp = resolve_table(cfg)  # extras the file does not set come from the algorithm's SP table
    return Table(table.name, table.input, table.hidden, table.output, {**sp.extras, **table.extras})


def _show_table(table) -> str:
    rows = [
        f"  {r:<7} init_var {table.rule(r).init_var:+.1f}   multiplier {table.rule(r).multiplier:+.1f}   "
        f"lr {table.rule(r).lr:+.1f}"
        for r in ("input", "hidden", "output")
    ]
    rows += [f"  extras  {k} {v:+.1f}" for k, v in table.extras.items()]
    return "\n".join(rows)


def _run(args: argparse.Namespace) -> int:
    from trainers import DESIDERATA, Desiderata, coord_check, derive, table_key, using_table, write_table_file

    for name in ("steps", "batch_size"):
        if getattr(args, name) <= 0:
            raise BadInput(f"--{name.replace('_', '-')}={getattr(args, name)} must be positive")
    if not args.lr > 0 or not args.tolerance > 0:
        raise BadInput("--lr and --tolerance must be positive")
    if len(args.widths) < 2:
        raise BadInput(f"--widths={args.widths}: need at least two widths to fit a slope")
    cfg = _trainer_config(
        args.overrides,
        algorithm=args.algorithm,
        parametrization="sp",
        optimizer=args.optimizer,
        lr=args.lr,
        base_width=args.base_width,
        dtype="float64",
    )
    mup_cfg = cfg.replace(parametrization="mup")
    start = _start_table(args.start, cfg)
    des = DESIDERATA.get(cfg.algorithm, Desiderata())
    print(
        f"derive {cfg.algorithm} ({cfg.optimizer}) from {args.start}: widths {args.widths}, {args.steps} steps, "
        f"seeds {args.seeds}, batch {args.batch_size}, lr {args.lr}, float64"
    )
    if des.note:
        print(f"  {des.note}")
    if args.output_init:
        print("  --output-init: the output's pre-activation at init must be width-independent too")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        d = derive(
            cfg,
            start,
            widths=args.widths,
            steps=args.steps,
            seeds=args.seeds,
            batch_size=args.batch_size,
            tolerance=args.tolerance,
            progress=lambda msg: (print(msg), sys.stdout.flush()),
            output_init=True if args.output_init else None,
        )
    except ValueError as exc:
        print(f"FAIL: {exc}")
        return 1
    print(f"derived table ({d.evaluations} measurements, {d.cpu_s:.1f} s CPU of measurement):")
    print(_show_table(d.table))
    if d.unpinned:
        print(f"  not pinned by any measured slope (kept from the start): {', '.join(d.unpinned)}")
    print(
        "  bias learning rates are not derived (measured with bias: false): the table sets no bias_lr, so its "
        "biases follow the input row; add bias_lr to the file before a run with bias: true (docs/EXTENDING.md)"
    )
    print("remaining slopes (log2 RMS against log2 width; 0 is width-independent):")
    for k, v in d.final.slopes.items():
        print(f"  {k:<32} {v:+.3f}")
    check_lr = args.check_lr or (0.003 if cfg.optimizer == "adam" else 0.1)
    with using_table(mup_cfg, d.table):
        cc = coord_check(mup_cfg.replace(lr=check_lr), widths=args.widths, steps=3, seeds=args.seeds)
    worst = cc.max_abs_slope()
    ok = d.passed and worst < args.tolerance
    print(f"confirming coordinate check (lr {check_lr}, 3 steps): max |slope| {worst:.3f}")
    print(
        f"{'PASS' if ok else 'FAIL'}: derived max |slope| {d.max_abs_slope:.3f}, coordinate check {worst:.3f} "
        f"(tolerance {args.tolerance}); {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU"
    )
    if args.out:
        key = table_key(mup_cfg)
        note = (
            f"mutransfer derive --algorithm {cfg.algorithm} --optimizer {cfg.optimizer} --start {args.start} "
            f"{'--output-init ' if args.output_init else ''}{' '.join(args.overrides)}\nwidths {args.widths}, max |slope| {d.max_abs_slope:.3f}, "
            f"coordinate check {worst:.3f}\nload it with MUTRANSFER_TABLES={args.out}"
        )
        path = write_table_file(args.out, cfg.algorithm, key, d.table, note)
        print(f"wrote {path} (key {list(key)}; use it with MUTRANSFER_TABLES={path})")
    return 0 if ok else 1


COMMANDS = {
    "derive": ("Derive an algorithm's muP table by measurement: width exponents that make every slope 0.", _add, _run),
}
