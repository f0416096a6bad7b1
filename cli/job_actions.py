"""`batchyard jobs pause|resume|run`: on one job by id, or on every job a selector matches.

A bulk action (`--where DIMENSION=VALUE`, `--execution`) is one request to the API's bulk endpoint
(`POST /jobs/pause|resume|runs`), which records each job's change as its own event under one
correlation id and answers each job's outcome (docs/decisions/0111-bulk-actions.md). The CLI prints
one row per job and exits 2 when any job failed.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from cli import pairs
from cli.client import add_client_options, client_for, quoted
from cli.errors import CliError
from cli.runlog import refuse_follow_with_json, report_requested
from cli.table import print_json, table

BULK_PATHS = {"pause": "/jobs/pause", "resume": "/jobs/resume", "run": "/jobs/runs"}
DONE = {"pause": "paused", "resume": "resumed", "run": "run"}


def register(verbs: Any) -> None:
    pause = verbs.add_parser("pause", help="pause scheduling of a job, or of every job --where ...")
    _target_options(pause)
    pause.add_argument("--reason", help="why, recorded with the pause")
    pause.set_defaults(run=run_pause)

    resume = verbs.add_parser("resume", help="resume a paused job, or every job --where ...")
    _target_options(resume)
    resume.set_defaults(run=run_resume)

    run = verbs.add_parser("run", help="run a job now (prints the run id), or every job --where ...")
    _target_options(run)
    run.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a param for this run")
    run.add_argument("--params-json", metavar="JSON", help="overrides as one JSON object")
    run.add_argument(
        "--secret",
        action="append",
        metavar="KEY",
        help="a secret override, its value read from stdin or asked for",
    )
    run.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print the run's log until it ends; exit 0 when it succeeded, 1 otherwise",
    )
    run.add_argument(
        "--force", action="store_true", help="run even if the job's overlap policy would skip or queue it"
    )
    run.set_defaults(run=run_run)


def _target_options(parser: argparse.ArgumentParser) -> None:
    add_client_options(parser)
    parser.add_argument("job_id", metavar="ID", nargs="?", help="the job (or select with --where)")
    parser.add_argument(
        "--where",
        action="append",
        metavar="DIMENSION=VALUE",
        help="act on every job with this dimension value; repeat to require several",
    )
    parser.add_argument("--execution", help="act on every job of this execution (with --where: and)")


def _bulk_wanted(args: argparse.Namespace) -> bool:
    return bool(args.where) or args.execution is not None


def run_pause(args: argparse.Namespace) -> int:
    if args.job_id is not None and not _bulk_wanted(args):
        job = client_for(args).request(
            "POST",
            f"/jobs/{quoted(args.job_id)}/pause",
            body={"reason": args.reason} if args.reason else None,
        )
        _single(args, job, f"paused job {job['id']}")
        return 0
    return _bulk(args, "pause", {"reason": args.reason})


def run_resume(args: argparse.Namespace) -> int:
    if args.job_id is not None and not _bulk_wanted(args):
        job = client_for(args).request("POST", f"/jobs/{quoted(args.job_id)}/resume")
        _single(args, job, f"resumed job {job['id']}")
        return 0
    return _bulk(args, "resume", {})


def run_run(args: argparse.Namespace) -> int:
    overrides = {**pairs.params(args.param, args.params_json), **pairs.secret_params(args.secret)}
    refuse_follow_with_json(args)
    if args.job_id is not None and not _bulk_wanted(args):
        run = client_for(args).request(
            "POST",
            f"/jobs/{quoted(args.job_id)}/runs",
            body={"params": overrides},
            query={"force": "true"} if args.force else None,
        )
        return report_requested(args, run)
    if args.follow:
        raise CliError("--follow follows one run; leave it out with --where")
    if args.force:
        raise CliError("--force runs one job; leave it out with --where")
    return _bulk(args, "run", {"params": overrides})


def _single(args: argparse.Namespace, job: dict[str, Any], line: str) -> None:
    if args.json:
        print_json(job)
    else:
        print(line)


def _bulk(args: argparse.Namespace, verb: str, extra: dict[str, Any]) -> int:
    if args.job_id is not None:
        raise CliError(f"give a job id or --where, not both: `jobs {verb} ID` or `jobs {verb} --where k=v`")
    if not _bulk_wanted(args):
        raise CliError(f"which job? `jobs {verb} ID`, or every job matching `--where DIMENSION=VALUE`")
    where = pairs.string_pairs(args.where, "--where")
    selector = " ".join([f"{key}={value}" for key, value in where.items()])
    if args.execution is not None:
        selector = f"{selector} execution={args.execution}".strip()
    client = client_for(args, correlation_id=str(uuid.uuid4()), timeout=60.0)
    body = {"dimensions": where, "execution": args.execution, **extra}
    result = client.request("POST", BULK_PATHS[verb], body=body)
    if result["matched"] == 0:
        raise CliError(f"no job matches {selector}")
    if args.json:
        print_json(result)
    else:
        rows = [[item["job_id"], item["name"], _result_text(verb, item)] for item in result["items"]]
        print(table(["job", "name", "result"], rows))
        counts = ", ".join(f"{result[outcome]} {outcome}" for outcome in ("changed", "unchanged", "failed"))
        print(
            f"{verb}: {counts} of {result['matched']} jobs matching {selector}; "
            f"correlation id {result['correlation_id']}"
        )
    if result["failed"]:
        raise CliError(
            f"{result['failed']} of {result['matched']} jobs matching {selector} failed; see above"
        )
    return 0


def _result_text(verb: str, item: dict[str, Any]) -> str:
    if item["outcome"] == "changed":
        return f"run {item['run_id']}" if verb == "run" else DONE[verb]
    if item["outcome"] == "unchanged":
        return item.get("reason") or "unchanged"
    return f"failed: {item.get('reason') or 'no reason given'}"
