"""The CLI describes itself: `--version` and a help text on every command and argument."""

import argparse
from importlib.metadata import version

import pytest

from sluice.serving.cli import build_parser, main


def helps(parser: argparse.ArgumentParser, path: str):
    """(where, help text) of every subcommand and argument under `parser`, walking the tree."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", listed.get(name)
                yield from helps(sub, f"{path} {name}")
        else:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_command_and_argument_has_help_text():
    found = list(helps(build_parser(), "sluice"))
    assert len(found) > 50 and "sluice sql rewrite --db" in dict(found)  # the walk reaches the leaves
    assert [where for where, text in found if not text] == []


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"sluice {version('sluice')}\n"
