"""The one kind of failure the CLI reports to the user: one readable line on stderr and exit code 2."""

from __future__ import annotations


class CliError(Exception):
    """Something the user can act on (a server unreachable, a port taken, bad input); never a traceback."""


EXIT_ERROR = 2
