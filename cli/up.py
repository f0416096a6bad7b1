"""`batchyard up`: run NATS, PostgreSQL and the four services on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.errors import CliError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "up", help="run NATS, PostgreSQL and the four services on this machine until Ctrl-C"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a service may take to stop after SIGTERM before it is killed (default: 10)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from cli.launch import up
    from shared.settings import Settings

    try:
        settings = Settings()
    except ValidationError as invalid:
        error = invalid.errors()[0]
        field = "BATCHYARD_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise CliError(f"{field}: {error['msg']}") from None
    return asyncio.run(up(settings, grace_s=args.grace))
