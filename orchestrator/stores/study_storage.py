"""Where tune-base's Optuna studies live: an RDB storage (SQLAlchemy URL) or a journal file.

``search.storage`` (or ``--storage``) is one of

- an SQLAlchemy URL: ``sqlite:///PATH`` (the default, ``<results>/<name>/optuna.db``) or a server,
  ``postgresql+psycopg2://USER:PASS@HOST:5432/DB`` (needs the ``postgres`` extra);
- ``journal:PATH``: Optuna's :class:`~optuna.storages.JournalStorage` on a
  :class:`~optuna.storages.journal.JournalFileBackend` at PATH, locked with
  :class:`~optuna.storages.journal.JournalFileOpenLock` (``O_EXCL``, safe on NFSv3 and later):
  for a shared file system, where SQLite's ``fcntl`` locks do not hold, and no server is wanted;
- ``journal``: the same at ``<results>/<name>/optuna.journal``.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import BadInput
from orchestrator.stores.paths import sqlite_file

JOURNAL = "journal"


def journal_file(url: str) -> Path | None:
    """The file of a ``journal:PATH`` storage (None for any other storage)."""
    if not url.startswith(JOURNAL + ":"):
        return None
    return Path(url[len(JOURNAL) + 1 :]).expanduser()


def storage_file(url: str) -> Path | None:
    """The local file of a storage (SQLite database or journal), None for a server."""
    return sqlite_file(url) or journal_file(url)


def default_url(url: str | None, sweep_dir: Path) -> str:
    """``url``, with ``None`` meaning SQLite and ``journal`` a journal file, both in ``sweep_dir``."""
    if not url:
        return f"sqlite:///{sweep_dir / 'optuna.db'}"
    if url == JOURNAL:
        return f"{JOURNAL}:{sweep_dir / 'optuna.journal'}"
    return url


def check_storage_url(url: str, where: str = "--storage") -> None:
    """BadInput unless ``url`` is ``journal:PATH`` (PATH not a directory, its parent not a file) or parses
    as an SQLAlchemy URL."""
    path = journal_file(url)
    if path is not None:
        if not str(path) or path.is_dir():
            raise BadInput(f"{where}={url!r}: journal:PATH needs a file path, e.g. journal:/mnt/shared/optuna.journal")
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise BadInput(f"{where}={url!r}: {parent} is a file, not a directory")
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise BadInput(f"{where}={url!r}: not an SQLAlchemy URL or journal:PATH ({exc})") from None


def open_storage(url: str):
    """The Optuna storage at ``url`` (a journal file is created, with its folder; BadInput when it cannot be opened)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = journal_file(url)
    try:
        if path is not None:
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(
                JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
            )
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy, drivers and the file system raise many kinds
        raise BadInput(f"storage {url}: cannot open ({str(exc).strip().splitlines()[0][:200]})") from None
