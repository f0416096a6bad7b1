"""`batchyard load-state FILE.jsonnet`: evaluate a state file here and apply it through `POST /state`.

The file is evaluated on the operator's machine, so `import`/`importstr` read files next to it (a
template kept in its own file in Git). The answer is printed as what was added, changed and removed
per kind. A refusal because jobs still use what the state would remove is one line naming the jobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.client import ApiClient, add_client_options, client_for, quoted
from cli.errors import CliError
from cli.jsonnet_file import evaluate
from cli.table import print_json

KINDS = ("executions", "dimensions")
CHANGES = (("added", "+"), ("changed", "~"), ("removed", "-"))
IN_USE = "https://batchyard.dev/problems/in-use"


def register(commands: Any) -> None:
    parser = commands.add_parser("load-state", help="apply a state file (executions, dimensions)")
    add_client_options(parser)
    parser.add_argument("file", type=Path, metavar="FILE", help="the state, as jsonnet or JSON")
    parser.add_argument("--dry-run", action="store_true", help="show the changes without applying them")
    parser.add_argument(
        "--force", action="store_true", help="apply even when it removes definitions jobs still use"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = evaluate(args.file)
    if not isinstance(state, dict):
        raise CliError(f"{args.file}: a state file must evaluate to an object with executions and dimensions")
    client = client_for(args, timeout=60.0)
    query = {"dry_run": "true" if args.dry_run else None, "force": "true" if args.force else None}
    response = client.call("POST", "/state", body=state, query=query)
    if response.status >= 400:
        raise CliError(_refusal(client, response.body) or _problem_line(response))
    result = response.body
    if args.json:
        print_json(result)
    else:
        print(describe_result(result, args.file))
    return 0


def _problem_line(response: Any) -> str:
    from cli.client import describe_problem

    return describe_problem(response)


def describe_result(result: dict[str, Any], file: Path) -> str:
    """`+ execution hello` lines per change, then one line saying what happened."""
    lines = []
    for kind in KINDS:
        changes = result.get(kind) or {}
        for change, mark in CHANGES:
            for name in changes.get(change) or []:
                lines.append(f"{mark} {kind[:-1]} {name} ({change})")
    if not lines:
        lines.append(f"no changes: the API already holds the state of {file}")
    elif result.get("dry_run"):
        lines.append(f"dry run: nothing applied; {len(lines)} change(s) would be made")
    else:
        lines.append(f"applied {len(lines)} change(s) from {file}")
    return "\n".join(lines)


def _refusal(client: ApiClient, problem: Any) -> str | None:
    """The in-use refusal as one line naming, for each blocked definition, the jobs (`name (id)`)."""
    if not isinstance(problem, dict) or problem.get("type") != IN_USE:
        return None
    blocked = problem.get("blocked")
    if not isinstance(blocked, dict) or not blocked:
        blocked = {"definitions": problem.get("jobs") or []}
    names: dict[str, str] = {}
    parts = []
    for what, job_ids in sorted(blocked.items()):
        users = ", ".join(names.setdefault(str(job), _job_name(client, str(job))) for job in job_ids)
        parts.append(f"{what} is used by {users}")
    return (
        f"refused: the state would remove what jobs still use: {'; '.join(parts)} "
        "(change those jobs, or pass --force)"
    )


def _job_name(client: ApiClient, job_id: str) -> str:
    response = client.call("GET", f"/jobs/{quoted(job_id)}")
    if response.status == 200 and isinstance(response.body, dict):
        return f"job {response.body['name']!r} ({job_id})"
    return f"job {job_id}"
