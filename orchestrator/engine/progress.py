"""A live view of a sweep: counts by status, throughput, ETA, retries and the best trial so far.

On a terminal one line is redrawn in place (cut to the terminal's width, so a redraw never
wraps); elsewhere (a log file, CI) plain mode writes whole lines, no carriage returns: one every
``every`` finished trials or ``interval`` seconds, at once for a failure or a retry, and at the end.

With ``status_path`` (``<sweep dir>/status.json``, :data:`STATUS_NAME`) the same counts are also
written there as JSON, atomically, at every finished trial and at most every
``status_interval`` seconds otherwise, for ``mutransfer status`` in another terminal
(:mod:`orchestrator.cli.cmd_status`): ``state`` (``running``, then ``closed``), ``total``, ``done``,
``skipped``, ``counts``, ``running``, ``retries``, ``started``, ``updated`` (epoch seconds),
``eta_s``, ``rate_per_min``, ``best``, ``pid``, ``host``.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from analysis.schema import DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC

STATUS_NAME = "status.json"  # what a running driver leaves in its sweep directory (and in base/)


def duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``3m05s``, ``2h07m`` or ``3d04h`` (at most six characters)."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Progress:
    """Counts trial events and prints one status line.

    Args:
        total: trials in the sweep; skipped: those already done in an earlier run.
        metric, mode: what "best" means: a ``final_*`` column of trials.parquet and ``min``/``max``.
        stream: where to write (stderr by default); min_interval: seconds between terminal redraws.
        every, interval: plain mode writes a line every ``every`` finished trials (default: about
            1 % of the trials, at least 1) or ``interval`` seconds, whichever comes first.
        tty: redraw in place (default: whether ``stream`` is a terminal).
        status_path: where to keep the status JSON (None: nowhere); status_interval: seconds between
            its writes when no trial finished.
    """

    def __init__(
        self,
        total: int,
        skipped: int = 0,
        metric: str = DEFAULT_OBJECTIVE_METRIC,
        mode: str = DEFAULT_MODE,
        stream: TextIO | None = None,
        min_interval: float = 1.0,
        every: int | None = None,
        interval: float = 30.0,
        tty: bool | None = None,
        status_path: str | Path | None = None,
        status_interval: float = 2.0,
    ) -> None:
        self.total, self.skipped, self.metric, self.mode = total, skipped, metric, mode
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.min_interval = min_interval
        self.every = every if every is not None else max(1, (total - skipped) // 100)
        self.interval = interval
        self.running: set[str] = set()
        self.counts = {"ok": 0, "diverged": 0, "failed": 0}
        self.retries = 0
        self.waiting: str | None = None  # set when trials can start only once resources are added
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()
        self.started_at = time.time()
        self._last = -math.inf
        self._last_done = -1
        self.status_path = Path(status_path) if status_path is not None else None
        self.status_interval = status_interval
        self._status_last = -math.inf

    def started(self, trial_id: str) -> None:
        """A trial started."""
        self.running.add(trial_id)
        self.render()
        self.write_status()

    def retried(self, trial_id: str) -> None:
        """Tune restarts a trial whose worker (or node) was lost."""
        self.retries += 1
        self.render(force=True)
        self.write_status(force=True)

    def finished(self, trial_id: str, status: str, row: dict[str, Any]) -> None:
        """A trial ended with ``status`` (ok, diverged or failed); ``row`` is its trials row."""
        self.running.discard(trial_id)
        self.counts[status] = self.counts.get(status, 0) + 1
        value = row.get(self.metric, math.nan)
        if status == "ok" and isinstance(value, float) and math.isfinite(value):
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                label = f"width={row.get('width')} lr={row.get('lr'):.4g} [{trial_id}]"
                self.best = (value, label)
        self.render(force=status == "failed" or self.tty)
        self.write_status(force=True)

    @property
    def done(self) -> int:
        return self.skipped + sum(self.counts.values())

    @property
    def ran(self) -> int:
        """Trials finished in this run (not the skipped ones)."""
        return sum(self.counts.values())

    def rate(self, now: float | None = None) -> float:
        """Trials finished per minute in this run (0 before the first)."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        return 60.0 * self.ran / elapsed if self.ran and elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the last trial ends at the rate so far (None before the first trial ends)."""
        rate = self.rate(now)
        return 60.0 * max(self.total - self.done, 0) / rate if rate > 0 else None

    def line(self, now: float | None = None) -> str:
        """The status line: counts, throughput and ETA, elapsed time, the best trial."""
        now = time.monotonic() if now is None else now
        c = self.counts
        pct = f" {100.0 * self.done / self.total:.0f}%" if self.total else ""
        eta = self.eta(now)
        speed = f"{self.rate(now):.3g}/min ETA {duration(eta)}" if eta is not None else "-/min ETA -"
        best = f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else "best -"
        wait = f" | {self.waiting}" if self.waiting and not self.running and self.done < self.total else ""
        return (
            f"[{self.done}/{self.total}{pct}] ok {c['ok']} diverged {c['diverged']} failed {c['failed']} "
            f"skipped {self.skipped} | running {len(self.running)} retries {self.retries} | {speed} "
            f"elapsed {duration(now - self.start)}{wait} | {best}"
        )

    def render(self, force: bool = False) -> None:
        """Redraw (terminal) or, in plain mode, write a line when one is due."""
        now = time.monotonic()
        if self.tty:
            if not force and now - self._last < self.min_interval:
                return
            width = shutil.get_terminal_size((160, 24)).columns - 1
            self.stream.write("\r\033[K" + self.line(now)[:width])
        else:
            due = self._last_done < 0 or self.done - self._last_done >= self.every or now - self._last >= self.interval
            if not (force or due):
                return
            self._last_done = self.done
            self.stream.write(self.line(now) + "\n")
        self._last = now
        self.stream.flush()
        self.write_status()

    def status(self, state: str = "running", now: float | None = None) -> dict[str, Any]:
        """What :meth:`write_status` writes: counts, ETA, times, this driver's pid and host."""
        now = time.monotonic() if now is None else now
        eta = self.eta(now)
        return {
            "state": state,
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "counts": dict(self.counts),
            "running": len(self.running),
            "retries": self.retries,
            "waiting": self.waiting,
            "started": self.started_at,
            "updated": time.time(),
            "elapsed_s": now - self.start,
            "rate_per_min": self.rate(now),
            "eta_s": eta,
            "best": None
            if self.best is None
            else {"metric": self.metric, "value": self.best[0], "trial": self.best[1]},
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def write_status(self, force: bool = False, state: str = "running") -> None:
        """Write :meth:`status` to ``status_path`` atomically (when set), at most every
        ``status_interval`` seconds unless ``force``. A failed write (a full disk) never stops the sweep:
        the trials are what must be recorded."""
        if self.status_path is None:
            return
        now = time.monotonic()
        if not force and now - self._status_last < self.status_interval:
            return
        self._status_last = now
        from analysis.io import write_json_atomic

        try:
            write_json_atomic(self.status(state, now), self.status_path)
        except OSError:
            pass

    def close(self) -> None:
        """End the line (terminal) or write the final counts (plain mode); the status JSON says ``closed``."""
        if self.tty:
            self.stream.write("\n")
        elif self._last_done != self.done:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self.write_status(force=True, state="closed")
