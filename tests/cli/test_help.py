"""Every command says what it does, and every option says what it defaults to."""

import argparse

import pytest

from oppsig.cli.main import build_parser


def _subparsers(parser, prefix=()):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                yield prefix + (name,), p
                yield from _subparsers(p, prefix + (name,))


COMMANDS = list(_subparsers(build_parser()))


def test_every_command_is_listed():
    names = {" ".join(n) for n, _ in COMMANDS}
    assert {"demo", "detect", "report", "export", "env", "sharpness", "toy linear", "toy valley", "data"} <= names


@pytest.mark.parametrize("name,parser", COMMANDS, ids=[" ".join(n) for n, _ in COMMANDS])
def test_help_describes_the_command_and_every_option(name, parser):
    assert parser.description and len(parser.description) > 30, f"oppsig {' '.join(name)} has no description"
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert a.help, f"oppsig {' '.join(name)} {a.option_strings or a.dest}: no help"
        if a.option_strings and not a.required:
            assert "default" in a.help, f"oppsig {' '.join(name)} {a.option_strings[0]}: default not stated"
        elif a.choices:  # positional choices: named, not a bare {a,b}
            assert a.metavar, f"oppsig {' '.join(name)} {a.dest}: choices shown bare"
