"""Parquet I/O: atomic writes (temporary file in the same directory, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` so that readers see either the old table or the new one, never half.

    The table goes to a temporary file beside ``path``, is fsynced, then renamed over it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
