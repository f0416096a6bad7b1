"""`batchyard replay`: rebuild every read model from position 0 and report differences from the live ones.

The work is the API's (`services.api.replay`); this command finds the database first. When no
`BATCHYARD_PG_DSN` is set, it uses the embedded PostgreSQL of the `batchyard up` running on the data dir.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from cli.errors import CliError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "replay", help="rebuild the read models from the event store and compare them with the live ones"
    )
    parser.add_argument("options", nargs=argparse.REMAINDER, help="passed on to the replay tool")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.local import use_running_installation

    use_running_installation()
    try:
        replay = importlib.import_module("services.api.replay")
    except ModuleNotFoundError as missing:
        if missing.name != "services.api.replay":
            raise
        raise CliError("this build has no replay tool (services.api.replay is missing)") from None
    sys.argv = ["batchyard replay", *args.options]
    result = replay.main()
    return result if isinstance(result, int) else 0
