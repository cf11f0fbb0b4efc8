"""`benchmarks/run.py --smoke` runs end to end (tiny sizes) and writes every goal's row, so the harness cannot rot."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOALS = [
    "PC step / BP step, T = 5",
    "PC step / BP step, T = 20",
    "marginal inference step",
    "TP step / BP step",
    "BP μP step / plain nn.Linear",
    "BP μP step / the fastest plain BP step",
    "sweep wall after its one-off start-up /",
    "one-off start-up of a sweep",
    "tracking (Parquet + MLflow)",
    "peak RSS per trial worker",
    "peak RSS of the driver",
    "recording a trial (20 epochs), part files",
]
JAX_GOALS = [
    "our BP μP step / the plain-JAX BP step",
    "our PC step / the plain-JAX peer's, T = 5",
    "our PC step / the plain-JAX peer's, T = 20",
]


def _run(tmp_path: Path, *flags: str) -> str:
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", *flags, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"},
    )  # the bench's own short tmp
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out.read_text()


def test_trainer_benchmarks_smoke(tmp_path):
    text = _run(tmp_path, "--skip-sweep", "--compare-old")
    assert "SMOKE RUN" in text and "SIMD flags: " in text
    has_jax = importlib.util.find_spec("jax") is not None
    for goal in GOALS[:6] + (JAX_GOALS if has_jax else []):
        row = next((line for line in text.splitlines() if goal in line), None)
        assert row is not None, goal
        verdict = row.strip().strip("|").split("|")[-1].strip()
        assert verdict in ("met", "MISSED"), row
    # the plain-JAX peer (the `bench` extra, which `make test` installs) is timed in the same run
    jax_rows = [line for line in text.splitlines() if "plain-JAX" in line]
    if has_jax:
        assert len(jax_rows) == 6, jax_rows  # BP, PC (T = 5, 20: against ours and its own BP), TP
        for row in jax_rows:
            float(row.strip("|").split("|")[1].split()[0])  # a measured number
    else:
        assert len(jax_rows) == 1 and "not installed" in jax_rows[0], jax_rows
    old_rows = [line for line in text.splitlines() if "new path / old path" in line]
    assert len(old_rows) == 5, old_rows  # BP μP, PC T = 5 and 20, TP, the two products
    for row in old_rows:
        float(row.strip("|").split("|")[1].split()[0])


@pytest.mark.slow
@pytest.mark.long  # the harness's own smoke rows run in make test; this adds a real sweep through it
def test_full_harness_smoke_with_a_real_sweep(tmp_path):
    text = _run(tmp_path)
    for goal in GOALS:
        assert any(goal in line for line in text.splitlines()), goal
    assert "not observed" not in text  # the worker watch saw the trial processes
