"""The top-level parser of `vehicle-cls`: how words after the subcommand are read."""
from __future__ import annotations

import pytest


def test_overrides_may_follow_options_and_other_words_stay_errors(capsys):
    """`train --config r.yaml --no-progress run.epochs=3` keeps every override (argparse alone rejects the
    ones after an option); a stray word is still a usage error, and a command without overrides takes none."""
    from vehicle_cls.cli import build_parser, parse_args

    args = parse_args(build_parser(), ["train", "--config", "r.yaml", "optim.lr=0.1", "--no-progress", "run.epochs=3",
                                       "--out", "x", "model.backend=keras"])
    assert args.overrides == ["optim.lr=0.1", "run.epochs=3", "model.backend=keras"] and args.no_progress
    for argv in (["train", "--config", "r.yaml", "optim.lr=0.1", "--no-progress", "stray"],
                 ["train", "--config", "r.yaml", "--no-progress", "-x.y=1"],
                 ["recipes", "demo_vehicle_types", "run.epochs=3"]):
        with pytest.raises(SystemExit):
            parse_args(build_parser(), argv)
        assert "unrecognized arguments" in capsys.readouterr().err
