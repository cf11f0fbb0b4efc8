"""`mutransfer` command line: one sub-command module per idea, each with add_parser() and run().

Exit codes: 0 done (verify: transfer holds), 1 the check ran and failed, 2 bad input, 3 inconclusive
(verify), 4 the machine refused to store results (no space, read-only, permission: one line naming the
path), 130 / 143 interrupted by SIGINT / SIGTERM. Every error among these is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from orchestrator.errors import BadInput, EnvironmentFault, Interrupted, environment_fault

# Each module defines COMMANDS: {name: (help, add_arguments(parser), run(args) -> int)}.
COMMAND_MODULES = [
    "orchestrator.cli.cmd_basic",
    "orchestrator.cli.cmd_analyze",
    "orchestrator.cli.cmd_sweep",
    "orchestrator.cli.cmd_ui",
    "orchestrator.cli.cmd_verify",
    "orchestrator.cli.cmd_theory",
    "orchestrator.cli.cmd_derive",
    "orchestrator.cli.cmd_status",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mutransfer",
        description=(
            "Does a learning rate tuned on a small network stay optimal on a wide one? "
            "Sweeps BP, PC and TP under SP and muP on Ray Tune, logs to MLflow and Parquet, "
            "and reports how well the optimal learning rate transferred."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for modname in COMMAND_MODULES:
        mod = importlib.import_module(modname)
        for name, (help_text, add_arguments, run) in mod.COMMANDS.items():
            p = sub.add_parser(name, help=help_text, description=help_text)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides allowed after options too
    (``sweep SPACE --results R train.epochs=2``: argparse alone stops the positional list at the first option)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in a and not a.startswith("-") for a in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = parse(build_parser(), argv)
    try:
        from orchestrator.spec.plugins import import_installed_and_env

        import_installed_and_env()  # plugins' algorithms and datasets, for every command
        code = args._run(args)
    except BadInput as exc:
        sys.stderr.write(f"mutransfer {args.command}: error: {exc}\n")
        return 2
    except Interrupted as exc:
        sys.stderr.write(f"mutransfer {args.command}: {exc}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("mutransfer: interrupted\n")
        return 130
    except Exception as exc:  # an environment error anywhere in the chain (Ray Tune and pyarrow wrap them): exit 4
        fault = environment_fault(exc, where=_written_under(args))
        if fault is None:
            raise
        return _environment_exit(args, fault)
    return int(code or 0)


def _environment_exit(args: argparse.Namespace, fault: EnvironmentFault) -> int:
    sys.stderr.write(
        f"mutransfer {args.command}: error: cannot write results: {fault}; free space or fix the "
        "permissions, then rerun the same command: it resumes\n"
    )
    return 4


def _written_under(args: argparse.Namespace) -> str | None:
    """The results directory the command writes under (named when an error gives no file name)."""
    for key in ("sweep_dir", "results", "out"):
        value = getattr(args, key, None)
        if isinstance(value, str) and value:
            return f"under {value}"
    return None


if __name__ == "__main__":
    sys.exit(main())
