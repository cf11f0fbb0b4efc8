"""orchestrator.cli.main: the command line's parsing, shared by every command."""

import pytest

from orchestrator.cli.main import build_parser, parse


def test_overrides_may_follow_options():
    """`sweep SPACE --results R key=value`: argparse alone ends the positional list at the first option."""
    args = parse(build_parser(), ["sweep", "s.yaml", "--results", "r", "train.epochs=2", "grid.width=[64]"])
    assert args.space == "s.yaml" and args.results == "r"
    assert args.overrides == ["train.epochs=2", "grid.width=[64]"]
    args = parse(build_parser(), ["sweep", "s.yaml", "train.epochs=2", "--results", "r", "seed=1"])
    assert args.overrides == ["train.epochs=2", "seed=1"]


def test_what_is_not_an_override_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(build_parser(), ["sweep", "s.yaml", "--results", "r", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a command without overrides takes none
        parse(build_parser(), ["compact", "x", "a=b"])
    assert exc.value.code == 2 and "unrecognized arguments: a=b" in capsys.readouterr().err
