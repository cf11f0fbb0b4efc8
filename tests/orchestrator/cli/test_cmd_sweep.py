"""`mutransfer sweep/sync/ui` on bad input: one line on stderr, exit 2, nothing written (no Ray started)."""

import subprocess
import sys
import textwrap

import pytest

from orchestrator.cli.main import main

GOOD = """
name: t
trainer: {algorithm: bp}
data: {dataset: fmnist, subset: 100, test_subset: 100}
train: {epochs: 1, batch_size: 32}
grid: {width: [16, 32], lr: [0.01, 0.1]}
"""


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture
def results(tmp_path):
    """A results directory that already holds another sweep's files (they must stay untouched)."""
    r = tmp_path / "results"
    (r / "other").mkdir(parents=True)
    (r / "other" / "trials.parquet").write_bytes(b"not touched")
    return r


def _bad(tmp_path, results, capsys, text, *extra):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(text))
    before = _snapshot(results)
    code = main(["sweep", str(space), *extra, "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _snapshot(results) == before
    return lines[0]


@pytest.mark.parametrize(
    "text, extra, needle",
    [
        ("grid: {width: [16}\n", [], "YAML syntax error"),
        (GOOD.replace("train:", "trian:"), [], "did you mean 'train'"),
        (GOOD, ["grid.widht=[16]"], "did you mean 'width'"),
        (GOOD, ["train.epochs=abc"], "epochs"),
        (GOOD, ["grid.width=[0]"], "width=0 must be a positive integer"),
        (GOOD, ["grid.lr=[0.0]"], "lr=0.0 must be > 0"),
        (GOOD, ["trainer.algorithm=xp"], "algorithm='xp' is not one of bp, pc, tp"),
        (GOOD, ["trainer.parametrization=ntk"], "parametrization='ntk' is not one of sp, mup"),
        (GOOD, ["grid.width=[]"], "grid.width is empty"),
        (GOOD, ["data.dataset=cifar"], "dataset='cifar' is not one of fmnist, fmnist14, fmnist7, fmnist4, teacher"),
        (GOOD, ["--max-concurrent", "-1"], "--max-concurrent=-1"),
    ],
)
def test_bad_sweep_input(tmp_path, results, capsys, text, extra, needle):
    line = _bad(tmp_path, results, capsys, text, *extra)
    assert needle in line, line
    assert "space.yaml" in line or line.split(": ")[2] == "override" or needle.startswith("--")


def test_missing_dataset(tmp_path, results, capsys, monkeypatch):
    import trainers._data as d

    monkeypatch.setattr(d, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MUTRANSFER_DATA", raising=False)
    line = _bad(tmp_path, results, capsys, GOOD)
    assert "data.dataset=fmnist" in line and "Fashion-MNIST not found" in line


def test_algorithm_without_a_trainer(tmp_path, results, capsys, monkeypatch):
    import trainers

    monkeypatch.setattr(trainers, "TRAINERS", {"bp": trainers.TRAINERS["bp"]})
    line = _bad(tmp_path, results, capsys, GOOD, "trainer.algorithm=tp")
    assert "algorithm='tp' has no trainer yet" in line


def test_results_directory_of_a_different_sweep(tmp_path, results, capsys):
    from orchestrator.spec.config import load_sweep, to_yaml
    from orchestrator.stores.results_store import ResultsStore

    space = tmp_path / "space.yaml"
    space.write_text(GOOD)
    ResultsStore(results / "t").write_config(to_yaml(load_sweep(space)))
    line = _bad(tmp_path, results, capsys, GOOD, "train.epochs=7")  # a grid that grows is the same sweep
    assert "train.epochs=7" in line and "another sweep" in line and "only grid axes may grow" in line


def test_bad_input_in_a_real_process_writes_nothing(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(GOOD.replace("width:", "with:"))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(space)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mutransfer sweep: error: {space}: unknown key 'grid.with' (not a TrainerConfig field) (did you mean 'width'?)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_sync_and_ui_need_existing_results(tmp_path, capsys):
    assert main(["sync", str(tmp_path / "none")]) == 2
    assert "not a sweep's results directory" in capsys.readouterr().err
    assert main(["ui", "--results", str(tmp_path / "none")]) == 2
    assert "no tracking store yet" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_compact_folds_part_files_and_refuses_a_directory_without_trials(tmp_path, capsys):
    from orchestrator.stores.results_store import ResultsStore, trial_row

    spec = {
        "trial_id": "a",
        "trainer": {
            "algorithm": "bp",
            "parametrization": "mup",
            "optimizer": "sgd",
            "model": "mlp",
            "width": 16,
            "base_width": 16,
            "depth": 3,
            "lr": 0.1,
            "inference_steps": 20,
            "seed": 0,
        },
        "data": {"dataset": "fmnist"},
    }
    hist = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_acc": 0.5, "wall_s": 1.0, "diverged": False}]
    store = ResultsStore(tmp_path / "s")
    store.record([trial_row("s", spec, hist, "ok")], {"a": hist})
    assert main(["compact", str(store.dir)]) == 0
    assert "folded 2 part file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in store.dir.iterdir()) == ["history.parquet", "trials.parquet"]
    assert store.trials().trial_id.tolist() == ["a"]
    (tmp_path / "empty").mkdir()
    before = _snapshot(tmp_path)
    assert main(["compact", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sweep's results directory" in err[0]
    assert _snapshot(tmp_path) == before


def test_next_lines_name_analyze_ui_and_a_rerun_of_failed_trials(tmp_path):
    from orchestrator.cli.cmd_sweep import next_lines
    from orchestrator.cli.cmd_verify import verify_next_lines

    d = tmp_path / "res" / "tiny"
    assert next_lines("s.yaml", [], "res", d) == [f"next: mutransfer analyze {d}", "next: mutransfer ui --results res"]
    again = next_lines("s.yaml", ["train.epochs=2"], "res", d, failed=3)[0]
    assert again.startswith("next: mutransfer sweep s.yaml train.epochs=2 --results res") and "3 failed" in again
    v = verify_next_lines("res", d / "report", 3)
    assert v[0] == f"next: open {d / 'report' / 'report.html'}" and v[1] == "next: mutransfer ui --results res"
    assert "verify.max_seeds" in v[2] and len(verify_next_lines("res", d / "report", 0)) == 2
