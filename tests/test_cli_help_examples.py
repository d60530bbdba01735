"""Every example command in ``edge-detect --help`` and each subcommand's ``--help`` parses, and its line
continuations survived (issue 26 item 15: a ``\\`` at the end of a line inside a Python string joined two lines,
leaving ``...0,360       --summary-json s.json`` in ``run --help``)."""
from __future__ import annotations

import argparse
import re
import shlex
from typing import List, Tuple

import pytest

from edge_detect.cli import build_parser

_COMMENT = re.compile(r"\s+#\s.*$")


def _texts() -> List[Tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = [("edge-detect", parser.description or "")]
    out += [(f"edge-detect {name}", (p.description or "") + "\n" + (p.epilog or "")) for name, p in sub.choices.items()]
    return out


def examples(text: str) -> List[str]:
    """The example commands of a help text: lines starting with ``edge-detect`` (or ``torchrun ... -m
    edge_detect``), continuation lines (after a trailing backslash) joined with their indentation removed and the
    trailing comment dropped."""
    commands: List[str] = []
    continued = False
    for raw in text.splitlines():
        line = raw.strip()
        if continued:
            commands[-1] += " " + line
        elif line.startswith(("edge-detect ", "torchrun ")):
            commands.append(line)
        else:
            continue
        continued = commands[-1].endswith("\\")
        if continued:
            commands[-1] = commands[-1][:-1].rstrip()
    return [_COMMENT.sub("", c) for c in commands]


def _cases():
    return [pytest.param(cmd, id=f"{where}: {cmd[:60]}") for where, text in _texts() for cmd in examples(text)]


def test_every_subcommand_has_examples():
    found = {where for where, text in _texts() if examples(text)}
    assert {"edge-detect", "edge-detect run", "edge-detect detect", "edge-detect export"} <= found


@pytest.mark.parametrize("command", _cases())
def test_help_example_parses_and_its_continuations_survived(command):
    aligned = re.sub(r"^(edge-detect \S+) +", r"\1 ", command)  # the top-level help aligns its subcommands
    assert "  " not in aligned, f"two lines run together (a lost line continuation?): {command!r}"
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        argv = argv[argv.index("edge_detect"):]
    assert argv[0] in ("edge-detect", "edge_detect")
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of saying the example is wrong
        pytest.fail(f"{command!r} does not parse (exit {exc.code})")
    assert args.command == argv[1]


def test_examples_join_continuations_and_drop_comments():
    text = ("examples:\n  edge-detect run --source a.mp4 \\\n      --batch 3   # three cameras\n"
            "  not a command\n  edge-detect run --source b.mp4 --zone z=0,0,1,0,1,1     --summary-json s.json\n")
    assert examples(text) == ["edge-detect run --source a.mp4 --batch 3",
                              "edge-detect run --source b.mp4 --zone z=0,0,1,0,1,1     --summary-json s.json"]
