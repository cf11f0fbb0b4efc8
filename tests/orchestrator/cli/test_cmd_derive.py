"""`mutransfer derive` end to end (real processes, real files), the table files it writes, and
``$MUTRANSFER_TABLES`` loading them into coord-check."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import main
from trainers import TrainerConfig, resolve_table
from trainers._table_file import load_table_file, parse_table, table_to_dict

HERE = Path(__file__).parent


def _plugin_text() -> str:
    """The worked example's module (docs/EXTENDING.md), as tests/orchestrator/spec/test_plugins.py writes it."""
    spec = importlib.util.spec_from_file_location("_plugins_test_text", HERE.parent / "spec" / "test_plugins.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.PLUGIN


def _mup(algorithm="bp", optimizer="sgd"):
    return resolve_table(TrainerConfig(algorithm=algorithm, optimizer=optimizer, parametrization="mup"))


def test_derive_from_mup_confirms_it_and_writes_a_loadable_table(tmp_path, capsys):
    out = tmp_path / "bp.yaml"
    code = main(["derive", "--algorithm", "bp", "--start", "mup", "--widths", "128,256,512", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "[1] start" in text and "step 1" not in text  # already width-independent: no step taken
    assert "PASS" in text and "confirming coordinate check" in text and "own layers.2 @2" in text
    doc = yaml.safe_load(out.read_text())
    assert doc["algorithm"] == "bp" and doc["key"] == ["mup", "sgd"]
    algorithm, key, table = parse_table(doc, str(out))
    mup = _mup()
    weights = lambda t, r: (t.rule(r).init_var, t.rule(r).multiplier, t.rule(r).lr)  # noqa: E731
    assert [weights(table, r) for r in ("input", "hidden", "output")] == [
        weights(mup, r) for r in ("input", "hidden", "output")
    ]
    # biases are not measured: the derived table says nothing about them rather than copying the start's
    assert (
        all(table.rule(r).bias_lr is None for r in ("input", "hidden", "output")) and "bias_lr" not in out.read_text()
    )
    assert "bias learning rates are not derived" in text


def test_table_file_round_trip_registers_under_its_key(tmp_path, monkeypatch):
    from trainers import register_table

    shipped = _mup("pc")
    key = ("mup", "sgd", -1.0)
    doc = table_to_dict("pc", key, resolve_table(TrainerConfig(algorithm="pc", gamma_bar_L=-1.0)))
    p = tmp_path / "pc.yaml"
    p.write_text(yaml.safe_dump(doc))
    cfg = TrainerConfig(algorithm="pc", gamma_bar_L=-1.0)
    before = resolve_table(cfg)
    try:
        algorithm, got_key, table = load_table_file(p)
        assert (algorithm, got_key) == ("pc", key) and resolve_table(cfg) is table
        assert table.extra("gamma_output") == 1.0 and table.output.lr == -2.0
        assert [table.rule(r).bias_lr for r in ("input", "hidden", "output")] == [0.0, 0.0, -1.0]  # bias rows kept
    finally:
        register_table("pc", key, before)
    assert shipped.name == "pc/mup/sgd/gbar=0"


def test_a_table_file_in_mutransfer_tables_is_what_coord_check_uses(tmp_path, run_cli):
    # SP's rows registered as bp's μP: the μP coordinate check must now fail (exit 1), and pass without it
    sp = table_to_dict("bp", ("mup", "sgd"), resolve_table(TrainerConfig(parametrization="sp")))
    p = tmp_path / "wrong.yaml"
    p.write_text(yaml.safe_dump(sp))
    args = ["coord-check", "--widths", "64,256,1024", "--steps", "1", "--out", str(tmp_path / "cc")]
    assert run_cli(args, dict(os.environ, MUTRANSFER_TABLES=str(p)), timeout=300).returncode == 1
    env = {k: v for k, v in os.environ.items() if k != "MUTRANSFER_TABLES"}
    assert run_cli(args, env, timeout=300).returncode == 0


@pytest.mark.parametrize(
    "args, file_text, needle",
    [
        (["derive", "--widths", "128"], None, "need at least two widths"),
        (["derive", "--algorithm", "xp"], None, "algorithm='xp' is not one of"),
        (["derive", "--start", "nosuch.yaml"], None, "--start nosuch.yaml: cannot read"),
        (
            ["derive", "--start", "t.yaml"],
            "algorithm: bp\nkey: [mup, sgd]\ninput: {lr: 1}\nhidden: {}\n",
            "t.yaml: output: missing",
        ),
        (
            ["derive", "--start", "t.yaml"],
            "algorithm: bp\nkey: [mup, sgd]\ninput: {lr: one}\nhidden: {}\noutput: {}\n",
            "t.yaml: input.lr='one' must be a finite number",
        ),
        (["derive", "--steps", "0"], None, "--steps=0 must be positive"),
        (["derive", "widht=3"], None, "widht"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_cli, args, file_text, needle):
    if file_text is not None:
        (tmp_path / "t.yaml").write_text(file_text)
    before = sorted(tmp_path.iterdir())
    proc = run_cli(args + ["--out", "o.yaml"], dict(os.environ), timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_a_bad_file_in_mutransfer_tables_is_one_line_exit_2(tmp_path, run_cli):
    p = tmp_path / "bad.yaml"
    p.write_text("algorithm: pc\nkey: [mup, sgd]\ninput: {}\nhidden: {}\noutput: {}\n")
    proc = run_cli(["coord-check", "--widths", "64,128"], dict(os.environ, MUTRANSFER_TABLES=str(p)), timeout=120)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "MUTRANSFER_TABLES:" in line and "is not shaped like pc's keys" in line


@pytest.mark.slow(reason="measured 43 s wall under load: derive of the worked example's rule and its coordinate check")
def test_the_worked_examples_rule_is_derived_and_passes_its_coordinate_check(tmp_path, run_cli):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fa_plugin.py").write_text(_plugin_text())
    env = dict(
        os.environ,
        MUTRANSFER_PLUGINS="fa_plugin",
        PYTHONPATH=os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p),
    )
    out = tmp_path / "fa.yaml"
    proc = run_cli(["derive", "--algorithm", "fa", "--out", str(out)], env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    doc = yaml.safe_load(out.read_text())
    assert doc["algorithm"] == "fa" and doc["key"] == ["mup", "sgd"]
    # not BP's μP: B_L is not W_L, so the output init stays at 1/fan_in (as TP's) and the lower lrs
    # are m^(1/2) smaller than BP's (measured; docs/EXTENDING.md)
    assert [doc[r]["init_var"] for r in ("input", "hidden", "output")] == [0.0, 0.0, 0.0]
    assert [doc[r]["lr"] for r in ("input", "hidden", "output")] == [0.5, -0.5, -1.0]
    env["MUTRANSFER_TABLES"] = str(out)
    proc = run_cli(
        [
            "coord-check",
            "--algorithm",
            "fa",
            "--widths",
            "128,256,512,1024",
            "--steps",
            "2",
            "--tolerance",
            "0.2",
            "--out",
            str(tmp_path / "cc"),
        ],
        env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: muP max |slope|" in proc.stdout


def test_table_files_win_over_a_plugin_imported_after_them(tmp_path, monkeypatch):
    # a sweep's plugins: are imported after the CLI loaded $MUTRANSFER_TABLES; the file must still win
    from orchestrator.spec.plugins import import_plugins
    from trainers import register_table

    cfg = TrainerConfig(algorithm="bp", optimizer="adam", parametrization="mup")
    shipped = resolve_table(cfg)
    doc = table_to_dict("bp", ("mup", "adam"), resolve_table(cfg.replace(parametrization="sp")))
    doc["name"] = "from the file"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "late_plugin_h6.py").write_text(
        "from trainers import register_table, resolve_table, TrainerConfig\n"
        "register_table('bp', ('mup', 'adam'), resolve_table(TrainerConfig(optimizer='adam')))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MUTRANSFER_TABLES", str(tmp_path / "t.yaml"))
    try:
        import_plugins(["late_plugin_h6"], "plugins")
        assert resolve_table(cfg).name == "from the file"
    finally:
        register_table("bp", ("mup", "adam"), shipped)
