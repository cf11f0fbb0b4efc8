"""File I/O of results: atomic writes (temporary file in the same directory, then rename), Parquet reads."""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` so that readers see either the old file or the new one, never half of it.

    ``write`` fills a temporary file beside ``path`` (``.<name>.<random>.tmp``, locked with
    ``flock`` while it is written, so that :func:`remove_stale_temps` can tell a live writer from a
    dead one), which is fsynced, given the usual mode and renamed over ``path``; on any error the
    temporary file is removed. The one atomic writer of the package: Parquet tables, sweep.yaml
    and JSON files all go through it.

    Raises:
        OSError: as the system raised it, naming ``path`` when the error named no file (pyarrow's
            "Error writing bytes" does not) or named the temporary file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when it is closed, or when this process dies
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno and exc.filename in (None, tmp):
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    return path


TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # write_atomic's temporary files


def remove_stale_temps(directory: str | Path, min_age_s: float = 2.0) -> list[Path]:
    """Remove the temporary files :func:`write_atomic` left in ``directory`` when its writer died
    (killed between creating and renaming one); the paths removed.

    A temporary file is stale when no process holds its lock (a live writer does, from the moment
    after it created it) and it is older than ``min_age_s`` (the moment between creating and
    locking). Readers never read them (part files are listed by name), so this only frees space.
    """
    directory = Path(directory)
    try:
        names = [n for n in os.listdir(directory) if TEMP.match(n)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    gone, now = [], time.time()
    for name in names:
        p = directory / name
        try:
            with open(p, "r+b") as fh:  # writable: flock over NFS is a POSIX lock, exclusive needs it
                if now - os.fstat(fh.fileno()).st_mtime < min_age_s:
                    continue
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer
                p.unlink()
                gone.append(p)
        except OSError:  # BlockingIOError: a live writer; gone meanwhile; not ours to remove
            continue
    return gone


def write_parquet_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically (:func:`write_atomic`)."""
    return write_atomic(path, lambda fh: pq.write_table(pa.Table.from_pandas(df, preserve_index=False), fh))


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (non-JSON values as ``str``) to ``path`` atomically."""
    return write_text_atomic(json.dumps(obj, indent=2, default=str) + "\n", path)


class ParquetError(ValueError):
    """A Parquet file that exists but cannot be read (corrupt or truncated); the message names it."""


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet table (an empty frame if the file does not exist).

    The file is opened once and read through that handle: a writer that renames a new table
    over the path meanwhile (a live sweep) cannot mix the old file's footer with the new one's
    pages, as reading by path (which opens it more than once) can.

    Raises:
        ParquetError: the file is not a readable Parquet table (corrupt, truncated, a directory).
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return pd.DataFrame()
    except OSError as exc:
        raise ParquetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh:
        try:
            return pq.read_table(fh).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ParquetError(f"{path}: not a readable Parquet table, corrupt or truncated ({first})") from None
