"""Names and paths: a sweep name is a name, not a path, and every file we write lies inside ``--results``.

A sweep's files go to ``<results>/<name>/`` (sweep.yaml, Parquet, Tune's storage, optuna.db,
report/), MLflow's artifacts to ``<results>/mlartifacts/<experiment>/``. A name such as
``../../x``, ``a/b`` or ``/abs`` would put them elsewhere (on a shared results volume, over
another user's files), so names are checked against a safe character set, and every path
built from one is checked, after resolving symbolic links, to lie inside the results directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.errors import BadInput

NAME_MAX = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str, where: str) -> str:
    """``name`` if it is a safe sweep (or experiment) name, else BadInput naming ``where``.

    Safe: 1 to 64 characters of letters, digits, ``.``, ``_``, ``-``, starting with a letter or
    digit, without ``..``: no path separator, no parent reference, never absolute.
    """
    text = str(name)
    if not text or len(text) > NAME_MAX or not _NAME.fullmatch(text) or ".." in text:
        raise BadInput(
            f"{where}={text!r}: not a valid name (1-{NAME_MAX} characters of letters, digits, "
            "'.', '_', '-', starting with a letter or digit, no '..' and no '/')"
        )
    return text


def check_results_dir(results_dir: str | Path, option: str = "--results") -> Path:
    """The resolved results directory; BadInput if it, or a folder above it, is not a directory.

    Nothing is created here: the directory may not exist yet.
    """
    path = Path(results_dir).expanduser()
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "is a file" if p == path else f"lies under {p}, which is a file"
                raise BadInput(f"{option} {results_dir}: {what}, not a directory; give a directory")
            break
    return path.resolve()


def inside(path: str | Path, root: str | Path, what: str) -> Path:
    """``path`` resolved, if it lies inside ``root`` (symbolic links followed), else BadInput naming ``what``."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise BadInput(f"{what} {path}: resolves to {path_r}, outside the results directory {root_r}")
    return path_r


def sqlite_file(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL (None for any other URL or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None
