"""A live view of a sweep: trials done / running / diverged / failed, and the best so far."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from analysis.schema import DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC


class Progress:
    """Counts trial events and prints one status line (redrawn in place on a terminal).

    Args:
        total: trials in the sweep; skipped: those already done in an earlier run.
        metric, mode: what "best" means: a ``final_*`` column of trials.parquet and ``min``/``max``.
        stream: where to write (stderr by default); min_interval: seconds between redraws.
    """

    def __init__(self, total: int, skipped: int = 0, metric: str = DEFAULT_OBJECTIVE_METRIC, mode: str = DEFAULT_MODE,
                 stream: TextIO | None = None, min_interval: float = 1.0) -> None:
        self.total, self.skipped, self.metric, self.mode = total, skipped, metric, mode
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval
        self.running: set[str] = set()
        self.counts = {"ok": 0, "diverged": 0, "failed": 0}
        self.retries = 0
        self.waiting: str | None = None  # set when trials can start only once resources are added
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()
        self._last = 0.0

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self.render()

    def retried(self, trial_id: str) -> None:
        """Tune restarts a trial whose worker (or node) was lost."""
        self.retries += 1
        self.render(force=True)

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
        self.render(force=True)

    @property
    def done(self) -> int:
        return self.skipped + sum(self.counts.values())

    def line(self) -> str:
        best = f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else "best -"
        c = self.counts
        wait = f" | {self.waiting}" if self.waiting and not self.running and self.done < self.total else ""
        return (f"[{self.done}/{self.total}] done {self.done} (ok {c['ok']}, diverged {c['diverged']}, "
                f"skipped {self.skipped}) running {len(self.running)} failed {c['failed']} "
                f"retries {self.retries} | {best}{wait} | {time.monotonic() - self.start:.0f}s")

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
