"""Bad input across sweep, tune-base, verify, analyze and coord-check (issue 20).

Each case runs ``mutransfer`` in this process and must answer exit 2 with a message of at most
3 lines naming the file, key or value, no traceback, within 30 s, and write nothing: the
results directory's grandparent (which holds it, its parent, and where ``name=../../escaped``
would land) is compared before and after, as is the working directory. No case starts Ray.
"""

import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from orchestrator.cli.main import main

SPACE = """
name: t
trainer: {algorithm: bp, depth: 3, base_width: 16}
data: {dataset: teacher, subset: 64, test_subset: 32}
train: {epochs: 1, batch_size: 32}
grid: {width: [16, 32], lr: [0.01, 0.1]}
search: {trials: 2}
"""
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the input is valid here")


def _snapshot(*roots):
    return [
        sorted((str(p.relative_to(r)), p.stat().st_size, p.stat().st_mtime_ns) for p in r.rglob("*")) for r in roots
    ]


def _truncated_parquet(path: Path) -> None:
    pd.DataFrame({"trial_id": ["a", "b"], "width": [16, 32], "lr": [0.1, 0.1], "status": ["ok", "ok"]}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not a parquet file")


# (command, argv after the space file with {R} = results dir, {T} = tmp dir; set-up; needle in the message)
CASES = [
    ("sweep", ["name=../../escaped"], None, "name='../../escaped': not a valid name"),
    ("sweep", ["name=a/b"], None, "name='a/b': not a valid name"),
    ("sweep", ["name={T}/abs"], None, "not a valid name"),
    ("sweep", ["name=.hidden"], None, "name='.hidden': not a valid name"),
    ("sweep", ["name=" + "x" * 65], None, "not a valid name"),
    ("sweep", ["name=a..b"], None, "not a valid name"),
    ("sweep", ["--results", "{T}/a/file"], "file", "--results {T}/a/file: is a file"),
    ("sweep", ["--results", "{T}/a/file/sub"], "file", "which is a file"),
    ("sweep", ["--address", "127.0.0.1:1"], None, "--address 127.0.0.1:1: nothing answers at 127.0.0.1:1"),
    ("sweep", ["--address", "ray://127.0.0.1:1"], None, "nothing answers at 127.0.0.1:1"),
    ("sweep", ["--address", "garbage"], None, "--address garbage: not HOST:PORT"),
    ("sweep", ["--address", "127.0.0.1:99999"], None, "--address 127.0.0.1:99999: not HOST:PORT"),
    ("sweep", ["--address", "nohost.invalid:6379"], None, "unknown host 'nohost.invalid'"),
    ("sweep", [], "ray_address", "RAY_ADDRESS=127.0.0.1:1: nothing answers"),
    ("sweep", ["trainer.device=cuda"], None, "trainer.device=cuda needs resources.gpu > 0"),
    ("sweep", ["trainer.device=tpu"], None, "device='tpu' is not one of"),
    pytest.param(
        "sweep",
        ["trainer.device=cuda", "resources.gpu=1"],
        None,
        "trainer.device=cuda: this machine has",
        marks=NO_CUDA,
    ),
    pytest.param(
        "sweep", ["resources.gpu=1"], None, "resources.gpu=1 per trial, but this machine has 0 GPU", marks=NO_CUDA
    ),
    ("sweep", ["resources.gpu=1000"], None, "resources.gpu=1000 per trial"),
    ("sweep", ["resources.cpu=100000"], None, "resources.cpu=100000 per trial"),
    ("sweep", [], "corrupt_trials", "t/trials.parquet: not a readable Parquet table"),
    ("sweep", [], "truncated_history", "t/history.parquet: not a readable Parquet table"),
    ("sweep", [], "link_sweep", "outside the results directory"),
    ("sweep", [], "matmul_env", "MUTRANSFER_MATMUL='mkl' is not one of auto, torch, onednn"),
    ("tune-base", ["name=../x"], None, "name='../x': not a valid name"),
    ("tune-base", [], "matmul_env", "MUTRANSFER_MATMUL='mkl' is not one of auto, torch, onednn"),
    ("tune-base", ["--results", "{T}/a/file"], "file", "is a file"),
    ("tune-base", ["--address", "127.0.0.1:1"], None, "nothing answers at 127.0.0.1:1"),
    ("tune-base", ["trainer.device=cuda"], None, "needs resources.gpu > 0"),
    ("tune-base", ["resources.gpu=1000"], None, "resources.gpu=1000 per trial"),
    ("tune-base", [], "corrupt_base", "base/trials.parquet: not a readable Parquet table"),
    ("verify", ["name=a/b"], None, "not a valid name"),
    ("verify", ["--address", "127.0.0.1:1"], None, "nothing answers at 127.0.0.1:1"),
    ("verify", ["--results", "{T}/a/file"], "file", "is a file"),
    ("verify", ["verify.max_seeds=0"], None, "verify.max_seeds=0 must be >= 1"),
    ("verify", ["verify.seed_step=0"], None, "verify.seed_step=0 must be >= 1"),
    ("verify", ["verify.seeds=4", "verify.max_seeds=3"], None, "verify.max_seeds=3 is below verify.seeds=4"),
    ("analyze", [], "corrupt_trials", "trials.parquet: not a readable Parquet table"),
    ("analyze", [], "truncated_trials", "trials.parquet: not a readable Parquet table"),
    ("analyze", [], "truncated_history", "history.parquet: not a readable Parquet table"),
    ("analyze", ["{T}/a/file"], "file", "no such directory"),
    ("analyze", [], "link_report", "report directory {T}/a/results/t/report: resolves to {T}/outside"),
    pytest.param("coord-check", ["device=cuda"], None, "device=cuda: this machine has", marks=NO_CUDA),
    ("coord-check", ["device=cuda:99"], None, "device=cuda:99: this machine has"),
    ("coord-check", ["device=tpu"], None, "device='tpu' is not one of"),
]


def _prepare(setup, tmp_path, results, monkeypatch):
    sweep_dir = results / "t"
    if setup == "file":
        (tmp_path / "a" / "file").write_text("a file, not a directory\n")
    elif setup == "ray_address":
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    elif setup == "matmul_env":
        monkeypatch.setenv("MUTRANSFER_MATMUL", "mkl")
    elif setup in ("corrupt_trials", "truncated_trials", "truncated_history"):
        sweep_dir.mkdir(parents=True)
        (_garbage if setup == "corrupt_trials" else _truncated_parquet)(sweep_dir / "trials.parquet")
        if setup == "truncated_history":
            pd.DataFrame({"trial_id": ["a"], "width": [16], "lr": [0.1], "status": ["ok"]}).to_parquet(
                sweep_dir / "trials.parquet"
            )
            _truncated_parquet(sweep_dir / "history.parquet")
    elif setup in ("link_sweep", "link_report"):  # a symbolic link that leads out of the results dir
        (tmp_path / "outside").mkdir()
        if setup == "link_sweep":
            sweep_dir.symlink_to(tmp_path / "outside")
        else:
            sweep_dir.mkdir()
            (sweep_dir / "report").symlink_to(tmp_path / "outside")
    elif setup == "corrupt_base":
        (sweep_dir / "base").mkdir(parents=True)
        _garbage(sweep_dir / "base" / "trials.parquet")


@pytest.mark.parametrize("command, extra, setup, needle", CASES)
def test_bad_input_answers_exit_2_in_one_line_and_writes_nothing(
    command, extra, setup, needle, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "a" / "results"
    results.mkdir(parents=True)
    (results / "other").mkdir()
    (results / "other" / "trials.parquet").write_bytes(b"another sweep's: not touched")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    _prepare(setup, tmp_path, results, monkeypatch)
    monkeypatch.chdir(tmp_path / "a")
    extra = [e.format(T=tmp_path, R=results) for e in extra]
    if command == "analyze":
        argv = ["analyze", *(extra or [str(results / "t")]), "--no-mlflow"]
    elif command == "coord-check":
        argv = ["coord-check", "--widths", "16,32", *extra]
    else:
        opts = [] if "--results" in extra else ["--results", str(results)]
        argv = [command, str(space), *extra, *opts, "--no-mlflow"]
    before = _snapshot(tmp_path)
    t0 = time.monotonic()
    code = main(argv)
    wall = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and "Traceback" not in err + out, err
    assert needle.format(T=tmp_path) in err, err
    assert wall < 120, wall  # a hang guard, not a timing: a refused Ray address retried for minutes before
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "results" / "a").exists()
