"""Optuna's storage for tune-base: SQLAlchemy URLs and the journal file (for shared file systems)."""

import json
import textwrap

import optuna
import pytest

from orchestrator.cli.main import main
from orchestrator.errors import BadInput
from orchestrator.spec.config import load_sweep
from orchestrator.stores.study_storage import check_storage_url, default_url, journal_file, open_storage, storage_file
from orchestrator.studies.tune_base import (
    resume_study,
    search_groups,
    search_space,
    searched_spec,
    storage_url,
    study_best,
)

SPACE = """
name: js
trainer: {algorithm: bp, optimizer: sgd, depth: 3, activation: tanh, base_width: 16}
data: {dataset: teacher, subset: 256, test_subset: 128}
train: {epochs: 1, batch_size: 64}
grid:
  parametrization: [sp, mup]
  width: [16, 32]
search: {trials: 2}
resources: {cpu: 1}
"""


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "js.yaml"
    p.write_text(textwrap.dedent(SPACE))
    return p


def test_storage_urls_default_and_journal(space, tmp_path):
    sw = load_sweep(space)
    results = tmp_path / "results"
    assert storage_url(sw, results) == f"sqlite:///{results.resolve() / 'js' / 'optuna.db'}"
    assert storage_url(sw, results, "journal") == f"journal:{results.resolve() / 'js' / 'optuna.journal'}"
    assert (
        storage_url(load_sweep(space, ["search.storage=journal:/mnt/x/o.journal"]), results)
        == "journal:/mnt/x/o.journal"
    )
    assert journal_file("journal:/a/b.journal").as_posix() == "/a/b.journal"
    assert storage_file("sqlite:////a/b.db").as_posix() == "/a/b.db" and storage_file("postgresql://h/db") is None
    assert default_url(None, tmp_path).startswith("sqlite:///")


@pytest.mark.parametrize("url, words", [("journal:", "needs a file path"), ("::nope::", "not an SQLAlchemy URL")])
def test_bad_storage_is_bad_input(url, words, tmp_path):
    with pytest.raises(BadInput, match=words):
        check_storage_url(url)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        check_storage_url(f"journal:{tmp_path / 'file' / 'o.journal'}")


def test_bad_journal_key_exits_2_and_writes_nothing(space, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    results = tmp_path / "results"
    code = main(
        [
            "tune-base",
            str(space),
            f"search.storage=journal:{tmp_path / 'file' / 'o.journal'}",
            "--results",
            str(results),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "search.storage" in err and "is a file" in err
    assert not results.exists()


def test_a_journal_study_resumes_like_an_rdb_one(space, tmp_path):
    """resume_study and study_best on a real JournalStorage (file backend, O_EXCL lock), reopened from its file."""
    sw = load_sweep(space)
    g = search_groups(sw, search_space(sw))[0]
    url = f"journal:{tmp_path / 'shared' / 'optuna.journal'}"
    storage = open_storage(url)
    assert resume_study(storage, g, "min", "final_train_loss", {})["trials"] == 0
    study = optuna.load_study(study_name=g.study, storage=storage)
    dist = {"params/lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    done_t, recorded_t, lost_t = (study.ask(fixed_distributions=dist) for _ in range(3))
    study.tell(done_t, 0.5)
    rec = searched_spec(g.template, {"lr": recorded_t.params["params/lr"]})["trial_id"]
    done = {rec: {"trial_id": rec, "status": "ok", "final_train_loss": 0.25}}
    reopened = open_storage(url)  # another process on the shared file system sees the same log
    assert resume_study(reopened, g, "min", "final_train_loss", done) == {
        "complete": 2,
        "recovered": 1,
        "failed": 1,
        "trials": 3,
    }
    best = study_best(open_storage(url), g, "final_train_loss", "min")
    assert best["best"] == {"lr": recorded_t.params["params/lr"]} and best["best_value"] == 0.25
    assert (tmp_path / "shared" / "optuna.journal").stat().st_size > 0


@pytest.mark.slow
def test_tune_base_on_a_journal_file_runs_and_resumes(space, tmp_path, ray_env, run_cli):
    """`search.storage=journal`: the studies go to <results>/js/optuna.journal through Ray Tune's OptunaSearch."""
    results = tmp_path / "results"
    args = ["tune-base", str(space), "search.storage=journal", "--results", str(results), "--no-mlflow"]
    first = run_cli(args, ray_env, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    journal = results / "js" / "optuna.journal"
    assert journal.is_file() and not (results / "js" / "optuna.db").exists()
    base = json.loads((results / "js" / "base_lr.json").read_text())
    assert base["storage"] == f"journal:{journal.resolve()}"
    (group,) = base["groups"]
    study = optuna.load_study(study_name=group["study"], storage=open_storage(base["storage"]))
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2
    again = run_cli(args, ray_env, timeout=400)  # resumed: the study already holds its trials
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 trials (0 this run" in again.stdout
