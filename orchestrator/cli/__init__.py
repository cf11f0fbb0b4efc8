"""The mutransfer command line: argument parsing in ``main``, one ``cmd_*`` module per group of commands."""

from orchestrator.cli.main import main

__all__ = ["main"]
