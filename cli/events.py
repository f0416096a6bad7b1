"""`batchyard events`: the event history in global order, or its live tail with `-f`.

With `-f` each event is one line as it arrives (`--json`: one JSON object per line), and the tail
resumes after the last position seen if the connection drops.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.client import add_client_options, client_for
from cli.errors import CliError
from cli.sse import follow
from cli.table import cell, print_json, table, when

DEFAULT_LIMIT = 100


def register(commands: Any) -> None:
    parser = commands.add_parser("events", help="the event history, or its live tail with -f")
    add_client_options(parser)
    parser.add_argument("--stream", help="only this stream, e.g. job-<id>, run-<id>, execution-<name>")
    parser.add_argument("--type", action="append", help="only this event type; repeat for several")
    parser.add_argument("--after", type=int, default=0, metavar="POSITION", help="only events after this")
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many (default {DEFAULT_LIMIT})"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="then keep printing new events")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.after < 0 or args.limit < 1:
        raise CliError("--after must be 0 or more and --limit 1 or more")
    query: dict[str, Any] = {"stream": args.stream, "type": args.type or []}
    if args.follow:
        return _follow(args, query)
    client = client_for(args)
    events = list(client.items("/events", {**query, "after": args.after}, args.limit))
    if args.json:
        print_json(events)
        return 0
    if not events:
        print("no events")
        return 0
    print(table(["position", "time", "stream", "type", "actor", "data"], [_row(e) for e in events]))
    if len(events) == args.limit:
        print(f"(first {args.limit}; more with --after {events[-1]['position']})", file=sys.stderr)
    return 0


def _row(event: dict[str, Any]) -> list[Any]:
    return [
        event["position"],
        when(event["time"]),
        event["stream_id"],
        event["type"],
        event["actor"],
        event["data"],
    ]


def _follow(args: argparse.Namespace, query: dict[str, Any]) -> int:
    client = client_for(args)
    start = str(args.after) if args.after else None
    for event in follow(client, "/events/stream", query, last_event_id=start):
        if args.json:
            print(event.data, flush=True)
            continue
        recorded = json.loads(event.data)
        position, time, stream, kind, actor, data = _row(recorded)
        print(f"{position:>8}  {time}  {stream:<44}  {kind:<20}  {actor:<12}  {cell(data)}", flush=True)
    return 0
