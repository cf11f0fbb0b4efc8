"""Nothing of an embedded Ray outlives its driver: a watchdog process that cleans up after it.

Ray's dashboard and runtime-env agents outlive a SIGKILLed driver: they are orphaned when their
raylet dies, try to report that through the GCS (gone too) and stay alive, ignoring SIGTERM.
:func:`watch` starts ``python -m orchestrator.engine.watchdog SESSION_DIR`` with a pipe from the driver.
When the pipe closes (the driver exited, however it died) the watchdog waits ``GRACE_S`` for Ray to
stop on its own, then SIGKILLs every process of this user that still holds a file open in the Ray
session's directory (its logs): that session's processes and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 2.0


def session_pids(session_dir: str | Path, exclude: int | None = None) -> list[int]:
    """Pids of the processes (readable by this user) holding a file open under ``session_dir``."""
    root = str(Path(session_dir).resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in (os.getpid(), exclude):
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(root + "/"):
                found.append(int(proc.name))
                break
    return found


def started_here(session_dir: str | Path) -> bool:
    """Whether a child of this process holds files in ``session_dir``: Ray was started here (embedded),
    not joined (a cluster's processes are never this watchdog's to kill)."""
    me = os.getpid()
    for pid in session_pids(session_dir):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            return True
    return False


def watch(session_dir: str | Path) -> subprocess.Popen:
    """Start the watchdog of the embedded Ray whose session directory is ``session_dir``.

    The returned process holds the read end of a pipe whose write end only this process holds:
    keep the Popen object alive for as long as Ray runs (closing it, or dying, starts the clean-up).
    """
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.engine.watchdog", str(session_dir), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal reaches the driver, not the watchdog
        cwd=Path(__file__).resolve().parents[2],
    )


def main(argv: list[str]) -> int:
    session_dir, driver = argv[0], int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns at EOF: the driver closed the pipe or died
    time.sleep(GRACE_S)
    for _ in range(3):
        pids = session_pids(session_dir, exclude=driver)
        if not pids:
            return 0
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
