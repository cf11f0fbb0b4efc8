"""The Ray-free sub-commands: coord-check, train, fetch-data (real processes, real files)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli.main import main

EXE = [sys.executable, "-m", "orchestrator.cli"]


def _run(args, **kw):
    return subprocess.run(EXE + args, capture_output=True, text=True, timeout=300, **kw)


def test_coord_check_writes_parquet_png_and_passes(tmp_path):
    out = tmp_path / "cc"
    code = main(["coord-check", "--widths", "64,256,1024", "--steps", "2", "--out", str(out)])
    assert code == 0
    table = pd.read_parquet(out / "coord_check.parquet")
    assert set(table.columns) >= {"width", "layer", "step", "delta_rms", "rms"}
    assert sorted(table.width.unique()) == [64, 256, 1024]
    assert (out / "coord_check.png").stat().st_size > 10_000
    assert len(pd.read_parquet(out / "slopes.parquet")) == 3 * 2


def test_coord_check_fails_with_exit_1_when_the_table_is_wrong(tmp_path, capsys):
    # SP judged by the μP criterion: an exploding output must fail the check
    code = main(
        [
            "coord-check",
            "--parametrization",
            "sp",
            "--widths",
            "64,256,1024",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0  # SP's own check: output slope > 0.5 holds
    code = main(
        [
            "coord-check",
            "--widths",
            "64,256,1024",
            "--steps",
            "1",
            "--lr",
            "0.1",
            "--tolerance",
            "0.001",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert code == 1
    assert "FAIL" in capsys.readouterr().out


def test_coord_check_plot_writes_sp_beside_mup(tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(
        ["coord-check", "--plot", "--algorithm", "bp", "--widths", "64,256,1024", "--steps", "1", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: bp sp" in printed and "PASS: bp mup" in printed
    table = pd.read_parquet(out / "coord_check.parquet")
    assert set(table.parametrization) == {"sp", "mup"} and set(table.algorithm) == {"bp"}
    assert (out / "coord_check.png").stat().st_size > 10_000 and (out / "coord_check.svg").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["coord-check", "--algorithm", "bp,pc"], "a list needs --plot"),
        (["coord-check", "loss=ce"], "needs loss=mse"),
        (["coord-check", "--algorithm", "xp"], "algorithm='xp' is not one of bp, pc, tp"),
        (["coord-check", "widht=3"], "widht"),
        (["coord-check", "--widths", "64,-1"], "positive"),
        (["coord-check", "depth=abc"], "depth"),
        (["train", "lr=0"], "lr=0.0 must be > 0"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_command():
    proc = _run(["--help"])
    assert proc.returncode == 0
    for cmd in ("coord-check", "train", "fetch-data", "demo"):
        assert cmd in proc.stdout


def test_fetch_data_reports_where_the_data_is():
    proc = _run(["fetch-data"])
    assert proc.returncode == 0, proc.stderr
    assert "Fashion-MNIST:" in proc.stdout
    path = Path(proc.stdout.split("Fashion-MNIST:")[1].strip())
    assert any(path.glob("train-images-idx3-ubyte*"))


def test_missing_data_is_exit_2_with_instructions(tmp_path):
    env = dict(os.environ, MUTRANSFER_DATA=str(tmp_path / "none"), XDG_CACHE_HOME=str(tmp_path / "c"))
    code = "import trainers._data as d, pathlib; d.FMNIST_SYSTEM_DIR = pathlib.Path('/nonexistent'); d.FMNIST_URL='http://127.0.0.1:9/'; from orchestrator.cli.main import main; raise SystemExit(main(['train']))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    assert "dataset-fashion-mnist" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
