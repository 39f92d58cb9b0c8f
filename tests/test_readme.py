"""The README is executable, so it cannot drift from the product.

* Every fenced block preceded by the line ``<!-- runnable -->`` runs as written, in README
  order, in one fresh temporary directory (as a new user would go through it), with this
  checkout's ``biohash`` first on PATH: shell blocks under ``bash -euo pipefail``, python
  blocks under this interpreter. Only blocks that need nothing but the embedded DIGITS set
  carry the marker.
* Every ``biohash ...`` command anywhere in a shell/bash/console block, including those
  quoted inside ``ray exec cluster.yaml "..."`` or ``ray job submit -- ...``, is checked
  against the real parser: the subcommand exists and every flag it uses is one that
  command accepts (what ``biohash <cmd> --help`` lists). Cloud and real-data commands
  are checked this way without running.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from biohash.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- runnable -->"
SHELLS = ("shell", "bash", "sh", "console")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int        # 1-based line of the opening fence
    runnable: bool


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append(Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1,
                            before == MARKER))
    return blocks


def _logical_lines(block: Block) -> list[str]:
    """Lines with backslash continuations joined; console blocks keep only ``$ `` lines."""
    lines, current = [], ""
    for raw in block.code.splitlines():
        if block.lang == "console":
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    return [line for line in lines if line.strip()]


def biohash_commands(line: str) -> list[list[str]]:
    """Every ``biohash`` invocation in a shell line, also inside quoted arguments."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:  # unbalanced quotes are a README bug too
        raise AssertionError(f"cannot parse README line {line!r}: {exc}") from None
    commands: list[list[str]] = []
    current: list[str] | None = None
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            current = None
        elif token == "biohash" or token.endswith("/biohash"):
            current = []
            commands.append(current)
        elif current is not None:
            current.append(token)
        elif "biohash " in token:  # e.g. ray exec cluster.yaml "biohash sweep status x"
            commands.extend(biohash_commands(token.replace("\\$", "$")))
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_flags(args: list[str], parser: argparse.ArgumentParser) -> str | None:
    """None when ``biohash <args>`` names a real command and only its flags; else why not."""
    path = ["biohash"]
    while (subs := _subparsers(parser)) and args and not args[0].startswith("-"):
        if args[0] not in subs:
            return f"{' '.join(path)} has no subcommand {args[0]!r}"
        path.append(args[0])
        parser, args = subs[args[0]], args[1:]
    for token in args:
        if not token.startswith("-") or re.fullmatch(r"-\d.*", token) or token == "-":
            continue
        flag = token.split("=", 1)[0]
        if flag not in parser._option_string_actions:
            return f"{' '.join(path)} does not accept {flag!r}"
    return None


def _all_commands() -> list[tuple[int, list[str]]]:
    out = []
    for block in readme_blocks(README.read_text()):
        if block.lang in SHELLS:
            for line in _logical_lines(block):
                out.extend((block.line, cmd) for cmd in biohash_commands(line))
    return out


def test_readme_has_runnable_blocks_and_biohash_commands():
    blocks = readme_blocks(README.read_text())
    assert sum(b.runnable for b in blocks) >= 3
    assert len(_all_commands()) >= 20


@pytest.mark.parametrize("line, args", _all_commands(),
                         ids=lambda v: v if isinstance(v, int) else " ".join(v)[:60])
def test_every_readme_command_uses_existing_flags(line, args):
    problem = check_flags(args, build_parser())
    assert problem is None, f"README.md line {line}: biohash {' '.join(args)}: {problem}"


def _runnable() -> list[Block]:
    return [b for b in readme_blocks(README.read_text()) if b.runnable]


@pytest.mark.slow
def test_runnable_readme_blocks_in_order(tmp_path):
    """A new user's session: every runnable block, in README order, in one fresh directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIOHASH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_AUTH_MODE", "disabled")
    for block in _runnable():
        if block.lang == "python":
            cmd = [sys.executable, "-c", block.code]
        else:
            assert block.lang in SHELLS, f"README.md line {block.line}: cannot run {block.lang!r}"
            cmd = ["bash", "-euo", "pipefail", "-c", block.code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, (f"README.md block at line {block.line} failed "
                                      f"({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                      f"{proc.stderr[-3000:]}")
