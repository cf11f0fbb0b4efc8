"""One command, one session: checks, the sweep's lock, Ray, interrupts; stages record trials into a store.

``sweep``, ``tune-base`` and ``verify`` each open one :class:`Session`: it runs the preflight checks
and :func:`check_runnable` once, takes the sweep's lock (:mod:`.lock`) for the whole command, starts
(or joins) Ray once, at the first trial that needs it, and turns SIGINT / SIGTERM into one line and
exit 130 / 143 (:class:`errors.Interrupted`). Within it, a :class:`Stage` is one results store (the
sweep's, or tune-base's ``base/``) with its MLflow parent run and progress line; ``stage.run(specs)``
submits trial specs (verify's rounds, tune-base's batches) and runs only those not recorded yet. A
nested ``open_session`` for the same sweep (verify's tune-base) reuses the open one.

Every stage's rounds go to one Ray Tune run per session (``tune_runner.Runner``, in
``<results>/<name>/tune/``), which runs in a thread of its own and records there; the main thread
waits for each round and handles the signals (:meth:`Session.wait`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from orchestrator.engine.driver import embedded, preflight, start_ray
from orchestrator.engine.lock import SweepLock
from orchestrator.engine.progress import STATUS_NAME, Progress
from orchestrator.engine.recorder import Recorder
from orchestrator.engine.watchdog import started_here, watch
from orchestrator.spec.config import Sweep, TrialSpec, check_runnable
from orchestrator.stores.results_store import ResultsStore
from orchestrator.stores.tracking import Tracker, default_tracking_uri

SIGNAL_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
WAIT_S = 0.2  # a stage waiting for Ray Tune looks for a stop this often


class Stop(BaseException):
    """Raised in the driver's main thread by SIGINT / SIGTERM (a BaseException: no ``except Exception``
    on the way, Ray Tune's included, swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Session:
    """What one command holds: the resolved results dir, the sweep lock, Ray once started, the stages."""

    def __init__(self, sweep: Sweep, results_dir: Path, address: str | None, command: str) -> None:
        self.sweep, self.results_dir, self.address, self.command = sweep, results_dir, address, command
        self.lock = SweepLock(results_dir / sweep.name, command)
        self.ray_started = False
        self.ray_ready = False
        self.waiting: str | None = None
        self._watchdog = None
        self.stages: list[Stage] = []
        self.stage_dirs: list[Path] = []  # every store this command wrote (engine.overheads remembers them)
        self._stop: int | None = None  # the signal received, while a record was being written
        self._critical = 0
        self._in_tune = False
        self._last: Stage | None = None  # the last stage closed (an interrupt's line counts its trials)
        self.runner = None  # tune_runner.Runner: one Ray Tune run for every stage's rounds (issue 27)

    # ---- Ray ----------------------------------------------------------------------
    def ray(self) -> str | None:
        """Connect to Ray (once per session); the note for trials that must wait for nodes."""
        if not self.ray_ready:
            cfg = self.sweep.config
            self.ray_started, self.waiting = start_ray(
                self.address, cfg.resources.cpu, cfg.resources.gpu, self.sweep.source
            )
            self.ray_ready = True
            if threading.current_thread() is threading.main_thread():  # Ray's own SIGTERM handler aborts
                for s in SIGNAL_CODES:
                    signal.signal(s, self._on_signal)
            if self.ray_started and embedded(self.address):  # nothing of an embedded Ray may outlive this
                # driver (orchestrator.engine.watchdog); a cluster's processes are the cluster's, never ours to kill
                from ray._private import worker

                session_dir = worker._global_node.get_session_dir_path()
                if started_here(session_dir):
                    self._watchdog = watch(session_dir)
        return self.waiting

    def tune(self, specs: list[dict[str, Any]]):
        """The session's Ray Tune run (:class:`tune_runner.Runner`), started at its first submission and
        kept for every round and stage after it; another only if the specs need another (their data)."""
        from orchestrator.engine import tune_runner

        cfg = self.sweep.config
        args = (
            self.results_dir / self.sweep.name / "tune",
            specs[0]["data"],
            cfg.resources.cpu,
            cfg.resources.gpu,
            cfg.max_failures,
            list(cfg.plugins),
            cfg.resources.get("batched", "auto"),
        )
        if self.runner is not None and self.runner.key != tune_runner.Runner.key_of(*args):
            self.close_tune()
        if self.runner is None:
            storage, data, cpu, gpu, max_failures, plugins, batched = args
            self.runner = tune_runner.Runner(storage, self.sweep.name, data, cpu, gpu, max_failures, plugins, batched)
        return self.runner

    def close_tune(self, stop: bool = False) -> None:
        """End the session's Tune run: once its trials ended, or at once (``stop``: Tune stops them)."""
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop(timeout=60) if stop else runner.close()

    def stop_ray(self) -> None:
        """Stop the embedded Ray this session started; its watchdog then removes what is left."""
        if self.ray_started:
            from orchestrator.engine import tune_runner

            tune_runner.shutdown()
            self.ray_started = False
        if self._watchdog is not None:
            self._watchdog.stdin.close()
            self._watchdog = None

    # ---- interrupts ---------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGINT / SIGTERM. While a stage waits for Ray Tune (which runs in its own thread and records
        there), the waiting loop (:meth:`wait`) stops Tune gracefully and raises once Tune returned.
        Elsewhere it is raised at once, or after the record being written (:meth:`critical`); a second
        signal at once."""
        again = self._stop is not None
        self._stop = signum
        if self._in_tune and not again:
            import logging

            logging.getLogger("ray.tune").setLevel(logging.ERROR)  # no "Tuner.restore" hint: rerunning resumes
            return
        if again or self._critical == 0:
            raise Stop(signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A block a signal does not cut (a trial being written): the stop is raised after it
        (inside Ray Tune, once Tune returned)."""
        main = threading.current_thread() is threading.main_thread()
        if not main:  # Tune's thread records; the main thread waits and raises (:meth:`wait`)
            yield
            return
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._stop is not None and not self._in_tune:
            raise Stop(self._stop)

    def wait(self, runner, batch) -> None:
        """Wait (on this thread, a signal handled every ``WAIT_S``) until Ray Tune ran ``batch``; on a
        SIGINT / SIGTERM, stop Tune gracefully (what it records meanwhile is written whole), then raise."""
        self._in_tune = True
        try:
            while self._stop is None and not runner.wait(batch, WAIT_S):
                pass
        finally:
            self._in_tune = False
            if self._stop is not None:
                self.close_tune(stop=True)
        if self._stop is not None:
            raise Stop(self._stop)

    def interrupted(self, signum: int) -> Exception:
        """The one line for an interrupt (an :class:`errors.Interrupted`): what was recorded, how to resume."""
        from orchestrator.errors import Interrupted

        stage = self.stages[-1] if self.stages else self._last
        if stage is not None:
            done, total = stage.progress.done, stage.progress.total
            what = f"{done} of {total} trials recorded in {stage.store.dir}"
        else:
            what = "nothing ran yet"
        name = signal.Signals(signum).name
        exc = Interrupted(f"interrupted ({name}): {what}; rerun the same command to resume")
        exc.exit_code = SIGNAL_CODES.get(signum, 128 + signum)
        return exc

    # ---- stages -------------------------------------------------------------------
    @contextmanager
    def stage(
        self,
        store: ResultsStore,
        config_text: str,
        *,
        recorded_as: Sweep,
        track: bool,
        tracked_name: str,
        experiment: str | None,
        stream: TextIO | None,
        known: list[TrialSpec] = (),
        compact: bool = True,
        max_concurrent: int | None = None,
        needs_ray: bool = False,
    ) -> Iterator[Stage]:
        """A results store opened for this command: config written, tracking started and back-filled,
        progress shown; compacted when the block ends.

        Args:
            store: the results store (the sweep's or tune-base's ``base/``).
            config_text: the resolved config written to its ``sweep.yaml``.
            recorded_as: the sweep whose name the rows carry (``<name>`` or ``<name>-base``).
            track: log to MLflow; ``tracked_name`` the parent run's name, ``experiment`` its experiment.
            stream: where progress goes (default stderr).
            known: trial specs whose recorded rows MLflow should back-fill now (an earlier run's).
            compact: fold the part files into the two tables when the block ends.
            max_concurrent: trials at once (default the sweep's ``max_concurrent``).
            needs_ray: trials will run: connect (and check what a trial needs) before anything is written.
        """
        cfg = self.sweep.config
        if needs_ray:  # a cluster that cannot run a trial: BadInput before anything is written
            self.ray()
        store.write_config(config_text)
        if store.dir not in self.stage_dirs:
            self.stage_dirs.append(store.dir)
        tracker = None
        if track:
            tracker = Tracker(
                default_tracking_uri(self.results_dir, cfg.tracking.uri),
                tracked_name,
                experiment,
                artifact_root=self.results_dir / "mlartifacts",
            )
            tracker.start(background=True)  # a new store's tables are created while Ray Tune starts
        progress = Progress(
            0, 0, cfg.objective.metric, cfg.objective.mode, stream, status_path=store.dir / STATUS_NAME
        )  # status.json: what `mutransfer status` reads from another terminal
        st = Stage(self, store, recorded_as, tracker, progress)
        st.max_concurrent = cfg.max_concurrent if max_concurrent is None else max_concurrent
        st.specs.update({t.trial_id: t.to_dict() for t in known})
        recorded = store.trials() if st.specs and tracker is not None else None
        if recorded is not None and not recorded.empty and tracker.enabled:  # a new sweep: no wait for MLflow
            tracker.sync(recorded, store.history(), st.specs, tune_dir=store.dir / "tune")
        self.stages.append(st)
        try:
            yield st
            if compact:
                with self.critical():
                    store.compact()
        finally:
            st.progress.close()
            if tracker is not None:
                tracker.flush_progress()  # the last live counts, also after an interrupt
            self.stages.remove(st)
            self._last = st


class Stage:
    """One results store within a session: ``run(specs)`` runs the specs it does not hold yet."""

    def __init__(
        self, session: Session, store: ResultsStore, recorded_as: Sweep, tracker: Tracker | None, progress: Progress
    ) -> None:
        self.session, self.store, self.recorded_as = session, store, recorded_as
        self.tracker, self.progress = tracker, progress
        self.specs: dict[str, dict[str, Any]] = {}  # every spec submitted (for MLflow's back-fill)
        self.done = store.done_ids()
        self.counts: dict[str, int] = dict.fromkeys(progress.counts, 0)  # trials run per status, every run
        self.submitted = 0  # trials handed to Ray (not recorded as done before)
        self.max_concurrent = 0  # trials at once (0: as many as the resources allow)
        self._shown = False

    @property
    def tracking_uri(self) -> str:
        return self.tracker.uri if self.tracker else ""

    def record(self, rows: list[dict], histories: dict[str, list[dict]]) -> None:
        """Record rows found elsewhere (Tune's storage) as done."""
        with self.session.critical():
            self.store.record(rows, histories)
        self.done |= {r["trial_id"] for r in rows}

    def run(self, specs: list[TrialSpec]) -> dict[str, int]:
        """Run the specs not recorded as done; the counts per status of the trials run now."""
        specs = list({t.trial_id: t for t in specs}.values())
        self.specs.update({t.trial_id: t.to_dict() for t in specs})
        todo = [t for t in specs if t.trial_id not in self.done]
        p = self.progress
        p.total += len(todo) if self._shown else len(specs)
        if not self._shown:
            p.skipped += len(specs) - len(todo)
            p.every = max(1, len(todo) // 100)
        before = dict(p.counts)
        if todo:
            p.waiting = self.session.ray()
        if not self._shown or todo:
            p.render(force=True)
            self._shown = True
        if not todo:
            return {}
        self.submitted += len(todo)
        cfg = self.session.sweep.config
        recorder = Recorder(
            Sweep(self.recorded_as.name, self.recorded_as.source, cfg, todo), self.store, self.tracker, p
        )
        dicts = [t.to_dict() for t in todo]
        runner = self.session.tune(dicts)
        batch = runner.submit(dicts, recorder, max_concurrent=self.max_concurrent, recorded_in=self.store.dir)
        self.session.wait(runner, batch)
        self.done |= recorder.finished & self.store.done_ids()
        ran = {k: p.counts.get(k, 0) - before.get(k, 0) for k in p.counts}  # every status, 0 included
        for k, v in ran.items():
            self.counts[k] = self.counts.get(k, 0) + v
        return ran


_open: dict[Path, Session] = {}


@contextmanager
def open_session(sweep: Sweep, results_dir: str | Path, address: str | None, command: str) -> Iterator[Session]:
    """Check, lock, and hold Ray for one command; a nested call for the same sweep reuses the session.

    Raises:
        BadInput: what :func:`driver.preflight` and :func:`config.check_runnable` refuse, or the sweep's
            lock held by another driver (nothing is written then).
        Interrupted: SIGINT or SIGTERM arrived (its ``exit_code`` 130 or 143).
    """
    resolved = preflight(sweep, results_dir, address)
    key = (resolved / sweep.name).resolve()
    if key in _open:
        yield _open[key]
        return
    check_runnable(sweep)
    session = Session(sweep, resolved, address, command)
    main = threading.current_thread() is threading.main_thread()
    old = {}
    if main:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours stops the command; Tune's would return as if done
        old = {s: signal.signal(s, session._on_signal) for s in SIGNAL_CODES}
    try:
        with session.lock:
            _open[key] = session
            try:
                yield session
            finally:
                del _open[key]
                try:
                    session.close_tune(stop=session._stop is not None)
                finally:
                    session.stop_ray()
            _remember(session)
    except Stop as stop:
        raise session.interrupted(stop.signum) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _remember(session: Session) -> None:
    """Keep this command's real overheads in the per-host cache (``engine.overheads``) for later plans."""
    try:
        import time

        from orchestrator.engine.overheads import process_started, remember

        ended, dirs = time.time(), session.stage_dirs
        for i, d in enumerate(dirs):
            remember(
                d,
                command_started=process_started() if i == 0 else None,
                command_ended=ended if i == len(dirs) - 1 else None,
            )
    except Exception:  # noqa: BLE001 - the cache only improves plans; a command never fails for it
        pass


__all__ = ["Session", "Stage", "Stop", "open_session"]
