"""One driver per sweep: a lock file in the sweep's directory, held for the whole command.

The lock is ``<results>/<name>/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local and on
NFS v3+ file systems, unlike ``flock``), holding ``{host, pid, started, since}`` as JSON. A second
driver finds it and stops with one line naming the holder. A lock whose holder is gone is taken
over: on the same host when its process no longer exists (or the pid was reused by a process that
started later); a lock from another host is never taken over (its process cannot be checked from
here): the message says which host and since when, and that the file may be removed once that
driver is known to be dead.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from orchestrator.errors import BadInput

LOCK_NAME = ".lock"


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return -1.0  # alive, not ours to inspect
        return -1.0
    return float(stat.rsplit(")", 1)[1].split()[19])


def _alive(holder: dict) -> bool:
    """Whether the process named by a lock on this host still runs (and is the one that took it)."""
    start = _process_start(int(holder.get("pid", -1)))
    if start is None:
        return False
    return start < 0 or holder.get("started") in (None, start)


class SweepLock:
    """The lock of one sweep directory; ``with SweepLock(dir, what):`` holds it for the block."""

    def __init__(self, sweep_dir: str | Path, what: str) -> None:
        self.path = Path(sweep_dir) / LOCK_NAME
        self.what = what  # the command, for the holder's description
        self.held = False
        self.created: list[Path] = []

    def _mine(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": self.what,
        }

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held by an unknown driver

    def acquire(self) -> None:
        """Take the lock, or raise :class:`BadInput` naming the driver that holds it."""
        self.created = []  # directories made for the lock: removed on release if still empty
        d = self.path.parent
        while not d.exists():
            self.created.insert(0, d)
            d = d.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released between our two calls
                if holder.get("host") == socket.gethostname() and holder.get("pid") and not _alive(holder):
                    self._take_over()
                    continue
                raise BadInput(self._busy(holder)) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(self._mine(), fh)
            self.held = True
            return
        raise BadInput(f"{self.path}: could not take the sweep lock (it changed hands three times); try again")

    def _take_over(self) -> None:
        """Move a dead holder's lock aside (only one taker's rename succeeds), then remove it."""
        stale = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, stale)
        except FileNotFoundError:
            return
        stale.unlink(missing_ok=True)

    def _busy(self, holder: dict) -> str:
        if not holder:
            return f"{self.path}: another driver holds this sweep (its lock file cannot be read); wait for it"
        who = f"{holder.get('command') or 'a driver'} (pid {holder.get('pid')} on host {holder.get('host')}"
        who += f", since {holder.get('since')})"
        tail = (
            "wait for it, or run this one with another name="
            if holder.get("host") == socket.gethostname()
            else "wait for it; if that driver is dead, remove this file"
        )
        return f"{self.path}: this sweep is in use by {who}; {tail}"

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        for d in reversed(self.created):  # a command refused before writing anything leaves nothing
            try:
                d.rmdir()
            except OSError:
                break  # not empty: the command wrote there

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
