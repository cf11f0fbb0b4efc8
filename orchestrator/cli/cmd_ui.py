"""Sub-commands `sync` and `ui`: (re)write a sweep's MLflow runs from its results directory, and browse them."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.errors import BadInput


# ---- sync ------------------------------------------------------------------------
def _add_sync(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep's results directory, e.g. results/smoke")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default: the sweep's, $MLFLOW_TRACKING_URI, or sqlite:///<results>/mlflow.db)",
    )


def _sync_one(tracker, store, swept: list[str], files: list[Path], config: dict) -> tuple[int, int]:
    """Back-fill one sweep (or its base search) into MLflow; (trials MLflow had, trials logged now)."""
    trials = store.trials()
    before = tracker.logged
    specs = {tid: {"swept": swept} for tid in trials.trial_id} if not trials.empty else {}
    n = tracker.sync(trials, store.history(), specs, tune_dir=store.dir / "tune")
    totals = trials.status.value_counts().to_dict() if not trials.empty else {}
    tracker.finish({f"trials_{k}": float(v) for k, v in totals.items()}, files=files, config=config)
    return before, n


def _run_sync(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from orchestrator.spec.config import load_sweep
    from orchestrator.stores.results_store import ResultsStore
    from orchestrator.stores.run_summary import base_summary, read_json
    from orchestrator.stores.tracking import Tracker, check_store, default_tracking_uri, log_report

    store = ResultsStore(args.sweep_dir)
    if not store.config_path.is_file() or not store.has_trials():
        raise BadInput(f"{args.sweep_dir}: not a sweep's results directory (no sweep.yaml and trials table)")
    sweep = load_sweep(store.config_path)
    uri = args.tracking_uri or default_tracking_uri(store.dir.parent, sweep.config.tracking.uri)
    check_store(uri)  # a damaged SQLite file: one line saying to move it aside, exit 2
    experiment = sweep.config.tracking.experiment or sweep.name
    root = store.dir.parent / "mlartifacts"
    tracker = Tracker(uri, sweep.name, experiment, artifact_root=root)
    if not tracker.start(repair=True):
        return 1
    if tracker.repaired:
        print(
            f"MLflow experiment {experiment!r} stored its artifacts by absolute path: moved to "
            f"{tracker.repaired!r} (deleted; MLflow can restore it) and written again from {store.dir}"
        )
    config = OmegaConf.to_container(sweep.config, resolve=True)
    before, n = _sync_one(
        tracker, store, list(sweep.swept_keys), [store.config_path, store.dir / "base_lr.json"], config
    )
    print(f"MLflow {uri}: sweep {sweep.name}: {before} trials were there, back-filled {n}")
    base = ResultsStore(store.dir / "base")
    if tracker.enabled and base.has_trials():
        summary = read_json(store.dir / "base_lr.json") or {}
        btr = Tracker(uri, f"{sweep.name}-base", experiment, artifact_root=root)
        if btr.start():
            swept = [str(p.get("name")) for p in summary.get("space", [])]
            b_before, b_n = _sync_one(btr, base, swept, [base.config_path, store.dir / "base_lr.json"], config)
            if summary:
                text, metrics, _ = base_summary(summary)
                btr.describe(metrics=metrics, description=text)
            print(f"MLflow {uri}: base search {sweep.name}-base: {b_before} trials were there, back-filled {b_n}")
        tracker.enabled = tracker.enabled and btr.enabled
    if tracker.enabled and (store.dir / "report" / "summary.json").is_file():
        log_report(store.dir / "report", uri, experiment, sweep.name, artifact_root=root)
        print(f"MLflow {uri}: report {store.dir / 'report'} logged to the sweep's run")
    return 0 if tracker.enabled else 1


# ---- ui --------------------------------------------------------------------------
def _add_ui(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results directory holding mlflow.db (default results)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="backend store URI (default: $MLFLOW_TRACKING_URI or sqlite:///<results>/mlflow.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")


def ui_command(uri: str, host: str, port: int, artifacts: str | Path | None = None) -> list[str]:
    """The ``mlflow server`` command line that serves ``uri`` (and, proxied, the artifacts under ``artifacts``)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifacts is not None:
        cmd += ["--serve-artifacts", "--artifacts-destination", Path(artifacts).resolve().as_uri()]
    return cmd


def sweep_urls(uri: str, base: str, artifacts: Path | None = None) -> list[tuple[str, str]]:
    """``(experiment name, runs-table URL)`` of every experiment in ``uri`` that holds a sweep's runs.

    With ``artifacts`` (the proxied artifacts' root), each logged ``report/report.md`` gets its image
    links absolute on ``base`` (:func:`orchestrator.stores.run_summary.md_served_at`), so that MLflow's
    markdown viewer shows the plots where this server runs.
    """
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    from analysis.schema import ROLE_SWEEP, TAG_ROLE
    from orchestrator.stores.run_summary import md_served_at, runs_url
    from orchestrator.stores.tracking import TAG_REPORT

    client = MlflowClient(tracking_uri=uri)
    out = []
    for exp in client.search_experiments():
        parents = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'", max_results=1000
        )
        if parents:
            out.append((exp.name, runs_url(base, exp.experiment_id)))
        for run in parents if artifacts is not None else []:
            if TAG_REPORT in run.data.tags and run.info.artifact_uri.startswith("mlflow-artifacts:"):
                md = artifacts / urlparse(run.info.artifact_uri).path.lstrip("/") / "report" / "report.md"
                if md.is_file() and (text := md.read_text()) != (new := md_served_at(text, base)):
                    md.write_text(new)
    return out


def check_port(host: str, port: int) -> None:
    """BadInput (one line naming the port and what to do) when ``host:port`` cannot be listened on:
    another server holds it, the address is not this machine's, or the port needs privileges."""
    if not 0 < port < 65536:
        raise BadInput(f"--port={port} is not a port number")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
    except socket.gaierror as exc:
        raise BadInput(f"--host={host}: not an address ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BadInput(
                    f"port {port} on {host} is in use (another `mutransfer ui` or server); "
                    f"give another with --port, e.g. --port {port + 1 if port < 65535 else 5001}"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadInput(f"--host={host}: not an address of this machine") from None
            raise BadInput(f"port {port} on {host}: {os.strerror(exc.errno or 0)}; give another with --port") from None


def _listening(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` (a wildcard host: on loopback)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


START_TIMEOUT_S = 180.0  # mlflow server on a loaded 2-CPU machine takes 10-30 s


def _run_ui(args: argparse.Namespace) -> int:
    from orchestrator.stores.tracking import check_store, default_tracking_uri, is_remote

    uri = args.tracking_uri or default_tracking_uri(args.results)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise BadInput(f"{uri.removeprefix('sqlite:///')}: no tracking store yet (run `mutransfer sweep` first)")
    check_store(uri)  # a damaged SQLite file: one line, before anything is started or printed
    check_port(args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    artifacts = None if is_remote(uri) else Path(args.results) / "mlartifacts"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    listed: list[str] = []
    if not is_remote(uri):
        try:
            listed = [f"  {name}: {url}" for name, url in sweep_urls(uri, base, artifacts)]
        except Exception as exc:  # the listing is a courtesy; the server shows everything
            listed = [f"  (could not list the sweeps: {str(exc).splitlines()[0][:200] if str(exc) else exc!r})"]
    proc = subprocess.Popen(ui_command(uri, args.host, args.port, artifacts), env=env, start_new_session=True)

    def stop(signum, frame):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and not _listening(args.host, args.port) and time.monotonic() < deadline:
            time.sleep(0.3)
        if proc.poll() is not None:  # it never served: say why, print no URL
            check_port(args.host, args.port)  # taken meanwhile by another server: that line, exit 2
            sys.stderr.write(f"mutransfer ui: the MLflow server exited ({proc.returncode}) before it served\n")
            return proc.returncode or 1
        print(f"MLflow UI on {base} for {uri} (Ctrl-C stops it)", flush=True)
        for line in listed:
            print(line, flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        stop(None, None)
        proc.wait(timeout=20)
        return 0


COMMANDS = {
    "sync": (
        (
            "Write a sweep's MLflow runs from its results directory: back-fill after the tracking server was "
            "down, re-log runs and artifacts of a store written by an older version."
        ),
        _add_sync,
        _run_sync,
    ),
    "ui": (
        "The MLflow UI on the sweep's tracking store, bound to 127.0.0.1; prints each sweep's runs table.",
        _add_ui,
        _run_ui,
    ),
}
