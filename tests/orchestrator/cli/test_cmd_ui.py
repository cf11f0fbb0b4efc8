"""`mutransfer ui` and `sync` on a real small sweep, read through MLflow's REST API as the UI reads it (slow).

One sweep (12 PC trials, a third diverging), `analyze`, the results directory copied elsewhere and the
original deleted, then a real `mlflow server` started by `mutransfer ui` on the copy: run names,
statuses, start/end times, params against tags, the parent's params, artifacts and verdicts, and the
report's images all come through the server. Then a store in the layout written before (trial ids as
names and params, artifacts by absolute path) is repaired by `mutransfer sync`. A busy port and a damaged
store (issues 28, 29): one line, exit 2, no URL printed (fast with a plain listener and SQLite file; slow
with a second `mutransfer ui` beside the real one and the sweep's own mlflow.db cut in half).
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

SPACE = """
name: uisweep
trainer: {algorithm: pc, depth: 3, activation: tanh, base_width: 16, inference_steps: 3}
data: {dataset: fmnist, subset: 300, test_subset: 200}
train: {epochs: 2, batch_size: 50}
grid:
  parametrization: [sp, mup]
  width: [16, 32]
  lr: [0.015625, 0.0625, 256.0]
metric: test_loss
mode: min
resources: {cpu: 1}
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base, route, **params):
    url = f"{base}/{route}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read()


def _post(base, path, body):
    req = urllib.request.Request(
        f"{base}/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.load(r)


def _kv(items):
    return {d["key"]: d["value"] for d in items or []}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished, analysed sweep, its results directory copied to another place and the original deleted."""
    import tempfile

    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "space.yaml").write_text(textwrap.dedent(SPACE))
    short = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=short, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    first = tmp / "a" / "results"
    t0 = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(tmp / "space.yaml"), "--results", str(first)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    t1 = time.time()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ana = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "analyze", str(first / "uisweep")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ana.returncode == 0 and "report logged to run" in ana.stdout, ana.stdout[-2000:] + ana.stderr[-2000:]
    copy = tmp / "b" / "results"
    shutil.copytree(first, copy)
    shutil.rmtree(tmp / "a")  # absolute paths into the first place would now fail
    shutil.rmtree(short, ignore_errors=True)
    return {"results": copy, "t0": t0, "t1": t1, "env": env, "tmp": tmp}


@pytest.fixture(scope="module")
def server(swept):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--results", str(swept["results"]), "--port", str(port)],
        env=swept["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    lines, deadline, up = [], time.time() + 120, False
    try:
        while time.time() < deadline and not any("uisweep: " in x for x in lines):  # printed once it serves
            lines.append(proc.stdout.readline())
        while time.time() < deadline and proc.poll() is None and not up:
            try:
                up = urllib.request.urlopen(base + "/health", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        assert up, "".join(lines)
        yield {"base": base, "printed": "".join(lines)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _runs(base, exp_id):
    return _post(base, "api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 1000})["runs"]


@pytest.mark.slow
def test_trial_runs_through_the_rest_api(swept, server):
    base = server["base"]
    exp = json.loads(_get(base, "api/2.0/mlflow/experiments/get-by-name", experiment_name="uisweep"))["experiment"]
    assert (
        f"uisweep: {base}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning"
        "&viewStateShareKey=mutransfer" in server["printed"]
    )
    tags = _kv(exp.get("tags"))
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    assert "params.`log2_lr`" in json.loads(tags["mlflow.sharedViewState.mutransfer"])["selectedColumns"]
    assert exp["artifact_location"] == "mlflow-artifacts:/uisweep"
    trials = pd.read_parquet(swept["results"] / "uisweep" / "trials.parquet").set_index("trial_id")
    runs = [
        r for r in _runs(base, exp["experiment_id"]) if _kv(r["data"].get("tags")).get("mutransfer.role") == "trial"
    ]
    assert len(runs) == len(trials) == 12 and set(trials.status) == {"ok", "diverged"}
    for r in runs:
        tags, params = _kv(r["data"].get("tags")), _kv(r["data"].get("params"))
        metrics = {m["key"]: m["value"] for m in r["data"].get("metrics", [])}
        t = trials.loc[tags["mutransfer.trial_id"]]
        assert r["info"]["run_name"] == f"pc-{t.parametrization}-w{t.width}-lr2^{math.log2(t.lr):g}-T3-s0"
        assert tags["mutransfer.sweep"] == "uisweep" and tags["mutransfer.status"] == t.status
        assert not {"trial_id", "sweep", "status"} & set(params)  # tags, not params
        assert float(params["lr"]) == t.lr and float(params["log2_lr"]) == math.log2(t.lr)
        assert r["info"]["status"] == {"ok": "FINISHED", "diverged": "KILLED"}[t.status]
        assert tags["diverged"] == str(int(t.status == "diverged")) and tags["epochs_done"] == str(t.epochs_done)
        assert set(metrics) <= {"loss", "test_loss", "test_acc", "sgd_steps"}  # the curves: their charts first
        assert t.status != "ok" or sorted(metrics)[0] == "loss"  # MLflow orders charts by name: train loss first
        start, end = r["info"]["start_time"] / 1000, r["info"]["end_time"] / 1000
        assert swept["t0"] <= start <= end <= swept["t1"]  # within the sweep, not when it was logged
        assert abs(start - t.started_at) < 0.002 and end - start >= t.wall_s - 0.002  # the trial's own times
        hist = json.loads(
            _get(base, "api/2.0/mlflow/metrics/get-history", run_id=r["info"]["run_id"], metric_key="loss")
        ).get("metrics", [])
        if t.status == "ok":
            assert sorted(m["step"] for m in hist) == [1, 2]
            assert all(start * 1000 <= m["timestamp"] <= end * 1000 for m in hist)


@pytest.mark.slow
def test_the_analysis_reads_the_same_trials_from_mlflow(swept):
    """Parquet is the truth; without it the analysis reads MLflow: same rows, no derived column."""
    from analysis.load import read_mlflow
    from analysis.transfer import analyze

    parquet = pd.read_parquet(swept["results"] / "uisweep" / "trials.parquet").sort_values("trial_id")
    trials, history = read_mlflow(f"sqlite:///{swept['results'] / 'mlflow.db'}", "uisweep", sweep="uisweep")
    assert "log2_lr" not in trials and set(trials.sweep) == {"uisweep"} and len(history) > 0
    assert list(trials.trial_id) == list(parquet.trial_id) and list(trials.status) == list(parquet.status)
    a, b = analyze(trials), analyze(parquet)
    assert a.keys == b.keys and list(a.groups.lr_star_base) == list(b.groups.lr_star_base)


@pytest.mark.slow
def test_parent_run_params_verdicts_and_artifacts_of_the_copied_directory(swept, server):
    base = server["base"]
    exp = json.loads(_get(base, "api/2.0/mlflow/experiments/get-by-name", experiment_name="uisweep"))["experiment"]
    parent = next(
        r for r in _runs(base, exp["experiment_id"]) if _kv(r["data"].get("tags")).get("mutransfer.role") == "sweep"
    )
    rid, params, tags = parent["info"]["run_id"], _kv(parent["data"].get("params")), _kv(parent["data"].get("tags"))
    assert parent["info"]["run_name"] == "uisweep" and parent["info"]["status"] == "FINISHED"
    assert params["grid.width"] == "[16, 32]" and params["train.epochs"] == "2" and params["data.dataset"] == "fmnist"
    assert params["objective.metric"] == "final_test_loss" and params["train.batch_size"] == "50"
    summary = json.loads((swept["results"] / "uisweep" / "report" / "summary.json").read_text())
    note = tags["mlflow.note.content"]
    for g in summary["groups"]:
        label = f"pc-{g['parametrization']}-T3"
        assert tags[f"verdict/{label}"] == g["verdict"] and f"| {label} |" in note
    metrics = {m["key"] for m in parent["data"].get("metrics", [])}
    assert {"trials_ok", "trials_diverged"} <= metrics and any(k.startswith("drift_k/") for k in metrics)
    # artifacts through the server, from the copied directory (the original is gone)
    listed = json.loads(_get(base, "ajax-api/2.0/mlflow/artifacts/list", run_uuid=rid))
    assert {"sweep.yaml", "report"} <= {f["path"] for f in listed["files"]}
    assert (
        _get(base, "get-artifact", path="sweep.yaml", run_uuid=rid)
        == (swept["results"] / "uisweep" / "sweep.yaml").read_bytes()
    )
    md = _get(base, "get-artifact", path="report/report.md", run_uuid=rid).decode()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)  # absolute on this server (its viewer needs a scheme)
    assert len(images) >= 2 and all(i.startswith(f"{base}/get-artifact?") for i in images), images
    described = re.findall(r"!\[[^\]]*\]\((get-artifact\?[^)]+)\)", note)  # relative: the description shows them
    assert len(described) == 2
    for link in [i.removeprefix(base + "/") for i in images] + described:
        assert _get(base, link).startswith(b"\x89PNG")  # as the UI's page resolves it, relative to /


@pytest.mark.slow
def test_sync_repairs_a_store_in_the_older_layout(swept):
    """A store as written before: runs named by trial id, trial_id/sweep as params, no format tag,
    artifacts by absolute path to a place that no longer exists."""
    from mlflow.tracking import MlflowClient

    results = swept["tmp"] / "c" / "results"
    shutil.copytree(swept["results"], results, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    uri = f"sqlite:///{results / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment("uisweep", artifact_location="file:///nonexistent/mlartifacts/uisweep")
    parent = client.create_run(
        eid, run_name="uisweep", tags={"mutransfer.role": "sweep", "mutransfer.sweep": "uisweep"}
    )
    trials = pd.read_parquet(results / "uisweep" / "trials.parquet")
    for t in trials.head(3).to_dict("records"):
        run = client.create_run(
            eid,
            run_name=t["trial_id"],
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                "mutransfer.role": "trial",
                "mutransfer.sweep": "uisweep",
                "mutransfer.trial_id": t["trial_id"],
                "mutransfer.status": t["status"],
            },
        )
        client.log_param(run.info.run_id, "trial_id", t["trial_id"])
        client.set_terminated(run.info.run_id, "FINISHED")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sync", str(results / "uisweep")],
        env=swept["env"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stored its artifacts by absolute path" in proc.stdout and "back-filled 12" in proc.stdout
    exp = client.get_experiment_by_name("uisweep")
    assert exp.experiment_id != eid and exp.artifact_location == "mlflow-artifacts:/uisweep"
    assert client.get_experiment(eid).lifecycle_stage == "deleted"  # kept, restorable
    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = sorted(r.info.run_name for r in runs)
    assert (
        len(runs) == 13 and "uisweep" in names and all(re.match(r"pc-(sp|mup)-w", n) for n in names if n != "uisweep")
    )
    assert all("trial_id" not in r.data.params for r in runs)
    new_parent = next(r for r in runs if r.info.run_name == "uisweep")
    assert new_parent.data.tags["mlflow.note.content"].count("| pc-") == 2
    art = results / "mlartifacts" / "uisweep" / new_parent.info.run_id / "artifacts"
    assert (art / "sweep.yaml").is_file() and (art / "report" / "loss_vs_lr.png").is_file()


@pytest.mark.slow
@pytest.mark.ui
def test_browser_screenshots_of_the_runs_table_a_trial_and_the_report(swept, server):
    """Opt-in (`make ui-check`): headless Chromium opens what `mutransfer ui` printed, a trial run, the
    parent run and report.md in the artifact viewer, and saves PNGs to $MUTRANSFER_UI_SHOTS (default tmp)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium or os.environ.get("MUTRANSFER_UI_CHECK") != "1":
        pytest.skip("browser check: set MUTRANSFER_UI_CHECK=1 (make ui-check) with Chromium installed")
    base = server["base"]
    exp = json.loads(_get(base, "api/2.0/mlflow/experiments/get-by-name", experiment_name="uisweep"))["experiment"]
    eid = exp["experiment_id"]
    runs = _runs(base, eid)
    parent = next(r for r in runs if _kv(r["data"].get("tags")).get("mutransfer.role") == "sweep")["info"]["run_id"]
    trial = next(r for r in runs if r["info"]["status"] == "FINISHED" and r["info"]["run_id"] != parent)
    out = Path(os.environ.get("MUTRANSFER_UI_SHOTS") or swept["tmp"] / "shots")
    out.mkdir(parents=True, exist_ok=True)
    ml = "?workflowType=machine_learning"
    pages = {
        "runs_table": re.search(r"uisweep: (\S+)", server["printed"]).group(1),
        "trial_run": f"{base}/#/experiments/{eid}/runs/{trial['info']['run_id']}{ml}",
        "parent_run": f"{base}/#/experiments/{eid}/runs/{parent}{ml}",
        "report_md": f"{base}/#/experiments/{eid}/runs/{parent}/artifacts/report/report.md{ml}",
        "trial_charts": f"{base}/#/experiments/{eid}/runs/{trial['info']['run_id']}/model-metrics{ml}",
    }
    for name, url in pages.items():
        profile = swept["tmp"] / f"profile-{name}"
        subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size=1600,{2600 if name in ('report_md', 'parent_run') else 1100}",
                "--virtual-time-budget=90000",
                f"--screenshot={out / (name + '.png')}",
                url,
            ],
            capture_output=True,
            timeout=180,
            check=False,
        )
        png = out / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 20_000, name  # a rendered page, not a blank one
    print(f"screenshots in {out}")


# ---- a busy port, a damaged store: one line, exit 2, nothing printed as if it worked ----------------
def _ui(results, port, env=None):
    env = dict(env or os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--results", str(results), "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _sqlite_store(path, cut=False):
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("create table runs (id integer primary key, name text)")
    con.executemany("insert into runs (name) values (?)", [(f"run-{i}" * 20,) for i in range(2000)])
    con.commit()
    con.close()
    if cut:  # as `truncate -s half`
        os.truncate(path, path.stat().st_size // 2)


def test_ui_on_a_busy_port_is_one_line_and_exit_2(tmp_path):
    _sqlite_store(tmp_path / "mlflow.db")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        proc = _ui(tmp_path, port)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is in use" in lines[0] and "--port" in lines[0]


def test_ui_on_a_damaged_store_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    _sqlite_store(tmp_path / "mlflow.db", cut=True)
    proc = _ui(tmp_path, _free_port())
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the MLflow tracking store is damaged" in lines[0]
    assert "move it aside" in lines[0] and "mutransfer sync" in lines[0]


@pytest.mark.slow
def test_a_second_ui_on_the_same_port_is_refused(swept, server):
    port = int(server["base"].rsplit(":", 1)[1])
    proc = _ui(swept["results"], port, swept["env"])
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert _get(server["base"], "health") == b"OK"  # the first one still serves


@pytest.mark.slow
def test_ui_and_sync_on_the_sweeps_mlflow_db_cut_in_half(swept):
    """(test_sync_repairs_a_store_in_the_older_layout shows sync writing a store afresh.)"""
    results = swept["tmp"] / "cut" / "results"
    shutil.copytree(swept["results"], results)
    db = results / "mlflow.db"
    os.truncate(db, db.stat().st_size // 2)
    ui = _ui(results, _free_port(), swept["env"])
    sync = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sync", str(results / "uisweep")],
        env=swept["env"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for proc, cmd in ((ui, "ui"), (sync, "sync")):
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
        assert proc.stderr.startswith(f"mutransfer {cmd}: error: {db}: the MLflow tracking store is damaged")
        assert proc.stderr.count("\n") == 1
