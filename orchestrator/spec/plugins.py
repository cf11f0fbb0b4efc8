"""Plugins: modules that register algorithms and datasets from outside this package.

A sweep file's ``plugins: [module, ...]``, the environment variable ``MUTRANSFER_PLUGINS``
(comma-separated modules) and installed packages' entry points in the group ``mutransfer.plugins``
name them; the driver imports them before it checks a config, and every
Ray worker imports them before it builds a trial. ``MUTRANSFER_TABLES`` (comma-separated table
files, e.g. from ``mutransfer derive --out``) is registered after them, in the driver and workers. A plugin module must be importable on every
node (on PYTHONPATH or installed); the embedded Ray's workers inherit the driver's environment.
See docs/EXTENDING.md.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

from orchestrator.errors import BadInput

PLUGINS_ENV = "MUTRANSFER_PLUGINS"
TABLES_ENV = "MUTRANSFER_TABLES"  # comma-separated table files (what `mutransfer derive --out` writes)
ENTRY_POINT_GROUP = "mutransfer.plugins"  # [project.entry-points."mutransfer.plugins"] name = "module"


def env_plugins() -> list[str]:
    """The modules named by ``$MUTRANSFER_PLUGINS`` (comma-separated; blanks ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def import_plugins(modules: Iterable[str], where: str) -> list[str]:
    """Import each module (which registers its trainers, tables, datasets); returns their names.

    Raises:
        BadInput: one line naming ``where`` (the key or variable), the module and why it failed.
    """
    names = [str(m) for m in modules]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a plugin's own error is bad input too, reported on one line
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BadInput(
                f"{where}: cannot import {name!r} ({type(exc).__name__}: {why}); a plugin must be "
                f"importable on every node (PYTHONPATH or an installed package)"
            ) from None
    if names:
        load_env_tables()  # a plugin may register a table for the same key: the files win, whatever the order
    return names


def entry_point_plugins() -> list[str]:
    """The modules installed packages name in the entry-point group ``mutransfer.plugins``."""
    from importlib.metadata import entry_points

    return [ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)]


def load_env_tables() -> list[str]:
    """Register the table files named by ``$MUTRANSFER_TABLES`` (after the plugins: a file may replace
    a plugin's table); a file that cannot be read is BadInput, one line."""
    files = [os.path.abspath(f.strip()) for f in os.environ.get(TABLES_ENV, "").split(",") if f.strip()]
    if files:
        os.environ[TABLES_ENV] = ",".join(files)  # absolute, for Ray workers started in other directories
        from trainers import TableFileError, load_table_file

        for f in files:
            try:
                load_table_file(f)
            except TableFileError as exc:
                raise BadInput(f"{TABLES_ENV}: {exc}") from None
    return files


def import_installed_and_env() -> list[str]:
    """Import the installed packages' plugins (entry points), then ``$MUTRANSFER_PLUGINS``'s, then
    register ``$MUTRANSFER_TABLES``'s table files."""
    names = import_plugins(entry_point_plugins(), f"entry point {ENTRY_POINT_GROUP}") + import_plugins(
        env_plugins(), PLUGINS_ENV
    )
    load_env_tables()
    return names


def import_all(modules: Iterable[str] = ()) -> list[str]:
    """What a Ray worker runs first: ``modules`` (a sweep's ``plugins``), the entry points, ``$MUTRANSFER_PLUGINS``."""
    return import_plugins(modules, "plugins") + import_installed_and_env()
