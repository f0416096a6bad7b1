"""`batchyard runs`: run history, one run, stopping a run, and its log."""

from __future__ import annotations

import argparse
from typing import Any, get_args

from cli.client import add_client_options, client_for, quoted
from cli.jobs import positive_int
from cli.pairs import params, string_pairs
from cli.runlog import follow_log, print_log, refuse_follow_with_json, report_requested
from cli.table import details, pairs, print_json, table, when
from shared.domain.job_state import RunStatus

STATUSES = get_args(RunStatus)


def register(commands: Any) -> None:
    parser = commands.add_parser("runs", help="run history, stop a run, read its log")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", help="runs, newest first")
    add_client_options(listing)
    listing.add_argument("--job", metavar="ID", help="only runs of this job")
    listing.add_argument("--status", choices=STATUSES, help="only runs in this status")
    listing.add_argument("--limit", type=positive_int, default=50, help="at most this many runs (default 50)")
    listing.add_argument("--all", action="store_true", help="every run, however many")
    listing.set_defaults(run=run_list)

    start = verbs.add_parser("start", help="run an execution without a job (a one-off run)")
    add_client_options(start)
    start.add_argument("--execution", required=True)
    start.add_argument("--dimension", action="append", metavar="KEY=VALUE", help="a dimension value to use")
    start.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a param (KEY:=JSON for non-strings)"
    )
    start.add_argument("--params-json", metavar="JSON", help="params as one JSON object")
    start.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print its log until it ends; exit 0 if it succeeded, else 1",
    )
    start.set_defaults(run=run_start)

    show = verbs.add_parser("show", help="one run")
    add_client_options(show)
    show.add_argument("run_id", metavar="ID")
    show.set_defaults(run=run_show)

    stop = verbs.add_parser("stop", help="stop a run: SIGTERM, then SIGKILL after the grace")
    add_client_options(stop)
    stop.add_argument("run_id", metavar="ID")
    stop.add_argument("--grace", type=float, metavar="SECONDS", help="seconds between SIGTERM and SIGKILL")
    stop.set_defaults(run=run_stop)

    logs = verbs.add_parser(
        "logs", help="print a run's log (raw, to stdout; --json: the API's chunks, one JSON line each)"
    )
    add_client_options(logs)
    logs.add_argument("run_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the log live until the run ends")
    logs.add_argument("--offset", type=int, default=0, help="start at this byte offset")
    logs.set_defaults(run=run_logs)


def run_list(args: argparse.Namespace) -> int:
    query = {"job_id": args.job.strip() if args.job else None, "status": args.status}
    runs = list(client_for(args).items("/runs", query, None if args.all else args.limit))
    if args.json:
        print_json(runs)
    elif not runs:
        print("no runs")
    else:
        print(run_table(runs))
    return 0


def run_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            run["id"],
            run.get("job_id"),
            run["execution"],
            run["status"],
            run.get("exit_code"),
            when(run["requested_at"]),
            _duration(run),
            run["trigger"],
        ]
        for run in runs
    ]
    return table(["id", "job", "execution", "status", "exit", "requested", "took", "trigger"], rows)


def _duration(run: dict[str, Any]) -> str:
    from datetime import datetime

    if not run.get("started_at") or not run.get("ended_at"):
        return "-"
    took = datetime.fromisoformat(run["ended_at"]) - datetime.fromisoformat(run["started_at"])
    return f"{took.total_seconds():.1f}s"


def run_start(args: argparse.Namespace) -> int:
    refuse_follow_with_json(args)
    body = {
        "execution": args.execution,
        "dimensions": string_pairs(args.dimension, "--dimension"),
        "params": params(args.param, args.params_json),
    }
    return report_requested(args, client_for(args).request("POST", "/runs", body=body))


def run_show(args: argparse.Namespace) -> int:
    run = client_for(args).get(f"/runs/{quoted(args.run_id)}")
    if args.json:
        print_json(run)
        return 0
    log = run.get("log")
    fields = [
        ("id", run["id"]),
        ("job", run.get("job_id") or "- (one-off)"),
        ("execution", run["execution"]),
        ("status", run["status"]),
        ("exit code", run.get("exit_code") if run.get("exit_code") is not None else "-"),
        ("reason", run.get("reason") or "-"),
        ("trigger", f"{run['trigger']} by {run['requested_by']}"),
        ("overrides", pairs(run.get("overrides"))),
    ]
    if run.get("scheduled_at"):
        fields.append(("tick", when(run["scheduled_at"])))
    if run.get("start_at") and not run.get("started_at"):
        fields.append(("starts at", when(run["start_at"])))
    fields += [
        ("requested", when(run["requested_at"])),
        ("started", when(run.get("started_at"))),
        ("ended", when(run.get("ended_at"))),
        ("took", _duration(run)),
    ]
    if run.get("stop_requested_at"):
        fields.append(("stop asked", when(run["stop_requested_at"])))
    if run.get("next_run_id"):
        fields.append(("retried as", run["next_run_id"]))
    if log:
        fields.append(("log", f"{log['bytes']} bytes, sha256 {log['sha256']}, {log['location']}"))
    print(details(fields))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    body = {"grace_s": args.grace} if args.grace is not None else None
    answer = client_for(args).request("POST", f"/runs/{quoted(args.run_id)}/stop", body=body)
    if args.json:
        print_json(answer)
    else:
        print(f"stop requested for run {args.run_id}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    if args.follow:
        follow_log(client_for(args, timeout=30.0), args.run_id, args.offset, as_json=args.json)
    else:
        print_log(client_for(args, timeout=30.0), args.run_id, args.offset, as_json=args.json)
    return 0
