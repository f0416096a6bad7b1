"""`batchyard jobs`: list, show, create, delete and the history of jobs; actions live in `job_actions`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli import job_actions, job_history, job_preview, pairs
from cli.client import add_client_options, client_for, quoted
from cli.errors import CliError
from cli.table import details, print_json, table, when
from cli.table import pairs as show_pairs


def register(commands: Any) -> None:
    parser = commands.add_parser("jobs", help="list, create and operate jobs")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", help="jobs, oldest first, optionally filtered")
    add_client_options(listing)
    listing.add_argument("--execution", help="only jobs of this execution")
    listing.add_argument("--state", choices=("enabled", "paused"), help="only enabled or paused jobs")
    add_where_option(listing, "--dimension")
    listing.add_argument("--limit", type=positive_int, help="at most this many jobs (default: all)")
    listing.set_defaults(run=run_list)

    show = verbs.add_parser("show", help="one job")
    add_client_options(show)
    show.add_argument("job_id", metavar="ID")
    show.set_defaults(run=run_show)

    create = verbs.add_parser("create", help="create a job from options or a JSON/jsonnet file")
    add_client_options(create)
    create.add_argument("--file", type=Path, help="the job as JSON or jsonnet; options given override it")
    create.add_argument("--name")
    create.add_argument("--execution")
    create.add_argument(
        "--dimension", action="append", metavar="KEY=VALUE", help="the job's value of a dimension"
    )
    create.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a param (KEY:=JSON for a non-string)"
    )
    create.add_argument("--params-json", metavar="JSON", help="params as one JSON object")
    create.add_argument(
        "--secret",
        action="append",
        metavar="KEY",
        help="a secret param, its value read from stdin or asked for",
    )
    create.add_argument("--cron", help="schedule, a cron expression like '0 3 * * *'")
    create.add_argument("--timezone", help="IANA time zone of --cron (default UTC)")
    create.add_argument(
        "--fired-by",
        choices=("batchyard", "nomad"),
        help="who fires --cron: batchyard's scheduler (default) or Nomad's periodic block (nomad "
        "executions only; see docs/nomad.md)",
    )
    create.add_argument("--disabled", action="store_true", help="create it paused")
    create.set_defaults(run=run_create)

    delete = verbs.add_parser("delete", help="delete a job")
    add_client_options(delete)
    delete.add_argument("job_id", metavar="ID")
    delete.set_defaults(run=run_delete)

    job_actions.register(verbs)
    job_history.register(verbs)
    job_preview.register(verbs)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def add_where_option(parser: argparse.ArgumentParser, option: str) -> None:
    parser.add_argument(
        option,
        action="append",
        dest="where",
        metavar="DIMENSION=VALUE",
        help="only jobs with this dimension value; repeat to require several",
    )


def list_query(where: dict[str, str], **filters: Any) -> dict[str, Any]:
    """The API's job filters: `dimension=<name>:<value>`, one per dimension."""
    return {**filters, "dimension": [f"{key}:{value}" for key, value in where.items()]}


def run_list(args: argparse.Namespace) -> int:
    where = pairs.string_pairs(args.where, "--dimension")
    query = list_query(where, execution=args.execution, state=args.state)
    jobs = list(client_for(args).items("/jobs", query, args.limit))
    if args.json:
        print_json(jobs)
    elif not jobs:
        print("no jobs")
    else:
        print(job_table(jobs))
    return 0


def job_table(jobs: list[dict[str, Any]]) -> str:
    rows = [
        [
            job["id"],
            job["name"],
            job["execution"],
            show_pairs(job["dimensions"]),
            "enabled" if job["enabled"] else "paused",
            schedule_text(job.get("schedule")),
        ]
        for job in jobs
    ]
    return table(["id", "name", "execution", "dimensions", "state", "schedule"], rows)


def schedule_text(schedule: dict[str, Any] | None) -> str:
    if not schedule:
        return "-"
    zone = schedule.get("timezone") or "UTC"
    by_nomad = ", fired by Nomad" if schedule.get("fired_by") == "nomad" else ""
    return f"{schedule['cron']} ({zone}{by_nomad})"


def job_details(job: dict[str, Any]) -> str:
    state = "enabled" if job["enabled"] else "paused"
    if not job["enabled"] and job.get("pause_reason"):
        state += f" ({job['pause_reason']})"
    return details(
        [
            ("id", job["id"]),
            ("name", job["name"]),
            ("execution", job["execution"]),
            ("dimensions", show_pairs(job["dimensions"])),
            ("params", show_pairs(job["params"])),
            ("schedule", schedule_text(job.get("schedule"))),
            ("state", state),
            ("version", job["version"]),
            ("created", f"{when(job['created_at'])} by {job['created_by']}"),
            ("updated", when(job["updated_at"])),
        ]
    )


def run_show(args: argparse.Namespace) -> int:
    job = client_for(args).get(f"/jobs/{quoted(args.job_id)}")
    if args.json:
        print_json(job)
    else:
        print(job_details(job))
    return 0


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The `POST /jobs` body: the file's fields, then each option given on the command line."""
    body: dict[str, Any] = {}
    if args.file is not None:
        from cli.jsonnet_file import evaluate

        loaded = evaluate(args.file)
        if not isinstance(loaded, dict):
            raise CliError(f"{args.file}: a job file must hold a JSON object")
        body.update(loaded)
    if args.name is not None:
        body["name"] = args.name
    if args.execution is not None:
        body["execution"] = args.execution
    if args.dimension:
        body["dimensions"] = {
            **body.get("dimensions", {}),
            **pairs.string_pairs(args.dimension, "--dimension"),
        }
    if args.param or args.params_json is not None or args.secret:
        given = {**pairs.params(args.param, args.params_json), **pairs.secret_params(args.secret)}
        body["params"] = {**body.get("params", {}), **given}
    if args.timezone is not None and args.cron is None:
        raise CliError("--timezone needs --cron: it is the time zone of the schedule")
    if args.fired_by is not None and args.cron is None:
        raise CliError("--fired-by needs --cron: it says who fires the schedule")
    if args.cron is not None:
        body["schedule"] = {"cron": args.cron, "timezone": args.timezone or "UTC"}
        if args.fired_by is not None:
            body["schedule"]["fired_by"] = args.fired_by
    if args.disabled:
        body["enabled"] = False
    for required in ("name", "execution"):
        if not body.get(required):
            raise CliError(f"--{required} is required (or give it in --file)")
    return body


def run_create(args: argparse.Namespace) -> int:
    job = client_for(args).request("POST", "/jobs", body=job_body(args))
    if args.json:
        print_json(job)
    else:
        print(job_details(job))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    client_for(args).request("DELETE", f"/jobs/{quoted(args.job_id)}")
    if args.json:
        print_json({"id": args.job_id, "deleted": True})
    else:
        print(f"deleted job {args.job_id}")
    return 0
