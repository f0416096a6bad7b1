"""`batchyard jobs history ID`: who changed what and when (docs/decisions/0112-job-history.md).

`GET /jobs/{id}/history` answers each change with its actor, time, correlation id and the fields it
changed (before → after, params and dimensions leaf by leaf, secrets as `***`); a deleted job keeps
its history.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from cli.client import add_client_options, client_for
from cli.errors import CliError
from cli.table import cell, print_json, table, when


def register(verbs: Any) -> None:
    history = verbs.add_parser("history", help="who changed a job, what and when")
    add_client_options(history)
    history.add_argument("job_id", metavar="ID")
    history.set_defaults(run=run_history)


def run_history(args: argparse.Namespace) -> int:
    try:
        job_id = uuid.UUID(args.job_id.strip())
    except ValueError:
        raise CliError(f"{args.job_id!r} is not a job id (a UUID such as `jobs list` shows)") from None
    items = list(client_for(args).items(f"/jobs/{job_id}/history", {}))
    if args.json:
        print_json(items)
        return 0
    rows = [
        [
            when(item["time"]),
            item["version"],
            item["type"].removeprefix("Job").lower(),
            item["actor"],
            item["correlation_id"],
            describe_changes(item),
        ]
        for item in items
    ]
    print(table(["when", "version", "change", "by", "correlation", "what"], rows))
    return 0


def describe_changes(item: dict[str, Any]) -> str:
    """`name=nightly execution=hello` for a creation, `params.greeting: hi → hello` for a change."""
    parts = []
    for change in item["changes"]:
        before, after = change["before"], change["after"]
        if item["type"] == "JobCreated" or before is None:
            parts.append(f"{change['field']}={cell(after)}")
        elif after is None:
            parts.append(f"{change['field']} removed")
        else:
            parts.append(f"{change['field']}: {cell(before)} → {cell(after)}")
    if item.get("reason"):
        parts.append(f"reason: {item['reason']}")
    return "; ".join(parts) if item["type"] != "JobCreated" else " ".join(parts)
