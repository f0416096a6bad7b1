"""`batchyard`: the command line. Each subcommand lives in its own module with `register(subparsers)`.

A command module adds its parser and sets `run` (a function of the parsed arguments returning the exit
code). Errors the user can act on are `CliError`s: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cli import events, health, jobs, keys, replay, runs, state, up
from cli.errors import EXIT_ERROR, CliError

SIGPIPE_EXIT = 141
COMMANDS = (up, health, jobs, runs, events, state, keys, replay)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="batchyard", description="Operate batch jobs: run the system, talk to its API.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as error:
        print(f"batchyard {args.command}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    return code


def _reader_went_away() -> int:
    """`batchyard events | head`: the reader closed the pipe; stop quietly as `cat` would (128 + SIGPIPE).

    stdout is pointed at /dev/null so the interpreter's final flush at exit cannot fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return SIGPIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
