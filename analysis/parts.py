"""A results table as one dataset: a base file plus immutable part files, each written atomically.

``<dir>/trials.parquet`` is the base (the single-file layout of every results directory written
before part files existed) and ``<dir>/trials/part-<seq>-<tag>.parquet`` hold the rows written
since, one file per write (a finished trial). Recording a trial writes one new part: its cost
does not depend on how many trials the table holds. Readers see one table:

- a row is keyed (``trial_id``); each key's rows come from the newest source that holds the
  key (parts by ``seq``, newer than the base), so a trial recorded again replaces its old rows;
- ``compact`` folds the parts into a new base, written atomically, whose Parquet metadata
  records the highest ``seq`` it holds (``mutransfer.parts_through``); readers ignore parts at
  or below that mark, so a crash after the new base and before the parts are deleted neither
  loses nor duplicates a row, and the next compaction deletes the leftovers;
- a reader that meets a base replaced or a part deleted under it (a compaction running) reads
  again, so it never mixes an old base with a newer set of parts.

The part files are read with ``pyarrow.dataset`` (schemas unified, a column missing in one part
is null there). Everything here writes through :func:`analysis.io.write_atomic`.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .io import ParquetError, write_atomic
from .schema import HISTORY_COLUMNS, TRIAL_COLUMNS

WATERMARK = b"mutransfer.parts_through"  # the base's metadata: the highest part seq folded into it
PART = re.compile(r"^part-(\d{20})-([0-9a-f]{8})\.parquet$")
_SRC = "__mutransfer_source"  # a column added while reading: 0 for the base, 1.. for the parts in seq order


def parts_dir(base: str | Path) -> Path:
    """``trials.parquet`` -> ``trials/``: where the table's part files live."""
    return Path(base).with_suffix("")


def part_seq(path: str | Path) -> int:
    """The sequence number in a part file's name."""
    return int(PART.match(Path(path).name).group(1))


def list_parts(base: str | Path) -> list[Path]:
    """The table's part files, oldest first (temporary files, which start with ``.``, are not parts)."""
    d = parts_dir(base)
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((d / n for n in names if PART.match(n)), key=lambda p: (part_seq(p), p.name))


def has_table(base: str | Path) -> bool:
    """Whether the table has a base file or any part file."""
    return Path(base).exists() or bool(list_parts(base))


def watermark(base: str | Path) -> int:
    """The highest part seq folded into the base (its footer only is read); -1 without a base or mark."""
    try:
        meta = pq.read_schema(base).metadata or {}
    except FileNotFoundError:
        return -1
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ParquetError(f"{base}: not a readable Parquet table, corrupt or truncated ({_first(exc)})") from None
    return int(meta.get(WATERMARK, b"-1"))


def next_seq(last: int) -> int:
    """A part seq above ``last``: the clock in nanoseconds, so that writers started later sort later."""
    return max(last + 1, time.time_ns())


def write_part(df: pd.DataFrame | pa.Table, base: str | Path, seq: int) -> Path:
    """Write ``df`` as the part ``seq`` of the table ``base``, atomically; the part's path."""
    path = parts_dir(base) / f"part-{seq:020d}-{secrets.token_hex(4)}.parquet"
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    return write_atomic(path, lambda fh: pq.write_table(table, fh))


@dataclass
class Snapshot:
    """A consistent read of a table: the frame, the base's mark and the highest part seq it holds."""

    frame: pd.DataFrame
    mark: int
    through: int


class _Moved(Exception):
    """The base was replaced or a part deleted while it was read: read again."""


def read_table(
    base: str | Path,
    key: str = "trial_id",
    order: Sequence[str] = (),
    first: Sequence[str] = (),
    marker: str | None = None,
) -> pd.DataFrame:
    """The table ``base`` with its parts (:func:`read_snapshot`); empty when neither exists."""
    return read_snapshot(base, key, order, first, marker).frame


def read_snapshot(
    base: str | Path,
    key: str = "trial_id",
    order: Sequence[str] = (),
    first: Sequence[str] = (),
    marker: str | None = None,
    attempts: int = 20,
) -> Snapshot:
    """Read the base and its live parts as one table, each ``key``'s rows from the newest source holding it.

    Args:
        base: the base file (``.../trials.parquet``); its parts are in :func:`parts_dir`.
        key: the column that identifies a record.
        order: with parts, sort the result by these columns (the base is returned as stored).
        first: with parts, put these columns first, in this order.
        marker: a row whose ``marker`` column is null says "this key has no rows now" (a trial recorded
            again without history); it hides the older rows of its key and is dropped.

    Raises:
        ParquetError: the base or a part is not a readable Parquet table (the message names it).
    """
    base = Path(base)
    for _ in range(attempts):
        try:
            return _read_once(base, key, list(order), list(first), marker)
        except _Moved:
            time.sleep(0.01)
    raise ParquetError(f"{base}: replaced while read {attempts} times (a compaction running?); read it again")


def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _read_base(base: Path) -> tuple[pa.Table | None, int, tuple | None]:
    """The base through one handle (a rename over it cannot mix two files): table, mark, identity."""
    try:
        fh = open(base, "rb")
    except FileNotFoundError:
        return None, -1, None
    except OSError as exc:
        raise ParquetError(f"{base}: cannot read ({exc.strerror or exc})") from None
    with fh:
        try:
            pf = pq.ParquetFile(fh)
            table = pf.read()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ParquetError(f"{base}: not a readable Parquet table, corrupt or truncated ({_first(exc)})") from None
        mark = int((pf.schema_arrow.metadata or {}).get(WATERMARK, b"-1"))
        return table, mark, _identity(os.fstat(fh.fileno()))


def _read_parts(paths: list[Path]) -> pa.Table:
    """The parts as one ``pyarrow.dataset`` (schemas unified), with the source column 1..len(paths)."""
    try:
        dataset = ds.dataset([str(p) for p in paths], format="parquet")
        schemas = []
        for frag in dataset.get_fragments():
            try:
                schemas.append(frag.physical_schema)
            except (pa.ArrowException, ValueError) as exc:
                if not Path(frag.path).exists():
                    raise _Moved from None
                raise ParquetError(
                    f"{frag.path}: not a readable Parquet table, corrupt or truncated ({_first(exc)})"
                ) from None
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        table = ds.dataset([str(p) for p in paths], format="parquet", schema=schema).to_table(
            columns=[*schema.names, "__filename"]
        )
    except (FileNotFoundError, pa.ArrowException, OSError) as exc:
        if not all(p.exists() for p in paths):
            raise _Moved from None  # a compaction deleted parts: their rows are in the new base
        raise ParquetError(f"{parts_dir(paths[0].parent)}: part files not readable ({_first(exc)})") from None
    source = pc.add(pc.index_in(table["__filename"], value_set=pa.array([str(p) for p in paths])), 1)
    return table.drop_columns(["__filename"]).append_column(_SRC, pc.cast(source, pa.int64()))


def _read_once(base: Path, key: str, order: list[str], first: list[str], marker: str | None) -> Snapshot:
    table, mark, ident = _read_base(base)
    live = [p for p in list_parts(base) if part_seq(p) > mark]
    parts = _read_parts(live) if live else None
    try:
        now = _identity(os.stat(base))
    except FileNotFoundError:
        now = None
    if now != ident:  # replaced since it was read: its parts may be gone from the listing
        raise _Moved
    if parts is None:
        return Snapshot(table.to_pandas() if table is not None else pd.DataFrame(), mark, mark)
    tables = [parts]
    if table is not None:
        tables.insert(0, table.append_column(_SRC, pa.array([0] * table.num_rows, pa.int64())))
    t = pa.concat_tables(tables, promote_options="permissive")
    if key in t.column_names:  # each key's rows from the newest source holding it
        keys = t.select([key, _SRC]).to_pandas()
        t = t.filter(pa.array((keys[_SRC] == keys.groupby(key, sort=False)[_SRC].transform("max")).to_numpy()))
    if marker and marker in t.column_names:  # rows that only say "this key has no rows now"
        t = t.filter(pc.is_valid(t[marker]))
    t = t.sort_by([(c, "ascending") for c in order if c in t.column_names] + [(_SRC, "ascending")])
    names = [c for c in first if c in t.column_names] + [c for c in t.column_names if c not in first and c != _SRC]
    return Snapshot(t.select(names).to_pandas(), mark, max(mark, part_seq(live[-1])))


def compact(
    base: str | Path,
    key: str = "trial_id",
    order: Sequence[str] = (),
    first: Sequence[str] = (),
    marker: str | None = None,
) -> int:
    """Fold the parts of ``base`` into a new base (atomic, marked with the highest seq it holds), then
    delete them. Crash-safe at every step: readers ignore parts at or below the new base's mark.

    Returns:
        The number of part files deleted.
    """
    base = Path(base)
    parts = list_parts(base)
    if not parts:
        return 0
    snap = read_snapshot(base, key, order, first, marker)
    if snap.through > snap.mark:  # live parts: a new base that holds them
        table = pa.Table.from_pandas(snap.frame, preserve_index=False)
        meta = {**(table.schema.metadata or {}), WATERMARK: str(snap.through).encode()}
        write_atomic(base, lambda fh: pq.write_table(table.replace_schema_metadata(meta), fh))
    gone = 0
    for p in parts:
        if part_seq(p) <= snap.through:
            p.unlink(missing_ok=True)
            gone += 1
    try:
        parts_dir(base).rmdir()  # the folder goes when it is empty: the directory reads as the single-file layout
    except OSError:
        pass
    return gone


# ---- a sweep's two tables -------------------------------------------------------------
TRIALS, HISTORY = "trials.parquet", "history.parquet"
HISTORY_ORDER = ("trial_id", "epoch")


def read_trials(sweep_dir: str | Path) -> pd.DataFrame:
    """A sweep's trials table: ``trials.parquet`` and ``trials/``, one row per trial id, contract columns first."""
    return read_table(Path(sweep_dir) / TRIALS, "trial_id", (), TRIAL_COLUMNS)


def read_history(sweep_dir: str | Path) -> pd.DataFrame:
    """A sweep's history table: ``history.parquet`` and ``history/``, sorted by trial id and epoch."""
    return read_table(Path(sweep_dir) / HISTORY, "trial_id", HISTORY_ORDER, HISTORY_COLUMNS, marker="epoch")


def compact_sweep(sweep_dir: str | Path) -> int:
    """Fold a sweep's part files into ``history.parquet``, then ``trials.parquet``; the part files removed."""
    sweep_dir = Path(sweep_dir)
    return compact(sweep_dir / HISTORY, "trial_id", HISTORY_ORDER, HISTORY_COLUMNS, marker="epoch") + compact(
        sweep_dir / TRIALS, "trial_id", (), TRIAL_COLUMNS
    )


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
