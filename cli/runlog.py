"""A run's log on the terminal: what is there now, or followed live until the run ends.

The log is printed raw to stdout, as the run wrote it (stdout and stderr interleaved in the order the
dispatcher captured them), so `batchyard runs logs ID > out.txt` keeps the bytes' text. Status lines
go to stderr. Following uses the SSE stream, whose ids are byte offsets, so a dropped connection
resumes exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cli.client import ApiClient, client_for, quoted
from cli.errors import CliError
from cli.sse import follow
from cli.table import print_json

TERMINAL = {"succeeded", "failed", "timed_out", "stopped", "lost", "rejected", "skipped"}
IDLE_CHECK_S = 5.0
OUTCOME_WAIT_S = 15.0
OUTCOME_POLL_S = 0.1
PAGE_BYTES = 1024 * 1024
EXIT_RUN_DID_NOT_SUCCEED = 1


def refuse_follow_with_json(args: argparse.Namespace) -> None:
    """Checked before a run is requested, so a wrong combination requests nothing."""
    if args.follow and args.json:
        raise CliError("--follow prints the log as text; leave out --json (or follow with `runs logs -f`)")


def report_requested(args: argparse.Namespace, run: dict[str, Any]) -> int:
    """What `jobs run` and `runs start` print for the run they requested: the API's JSON, the run's id,
    or with `--follow` its log and outcome (exit 1 when it did not succeed)."""
    if args.json:
        print_json(run)
        return 0
    if not args.follow:
        print(run["id"])
        return 0
    print(f"run {run['id']} requested", file=sys.stderr)
    return follow_run(client_for(args, timeout=30.0), run["id"])


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def print_log(client: ApiClient, run_id: str, offset: int = 0, *, as_json: bool = False) -> int:
    """Everything logged from `offset` so far (or the API's pages, one JSON line each); returns the
    offset after it."""
    path = f"/runs/{quoted(run_id)}/log"
    while True:
        page = client.get(path, offset=offset, limit=PAGE_BYTES)
        write(json.dumps(page) + "\n" if as_json else page.get("data") or "")
        next_offset = int(page.get("next_offset", offset))
        if page.get("complete") or next_offset <= offset:
            return next_offset
        offset = next_offset


def follow_log(client: ApiClient, run_id: str, offset: int = 0, *, as_json: bool = False) -> None:
    """The log from `offset` until it is complete (or the run ended without ever writing one); with
    `as_json`, each chunk as the stream sent it, one JSON line each."""
    path = f"/runs/{quoted(run_id)}/log/stream"
    position = {"offset": offset}

    def finished_quietly() -> bool:
        """No byte for a while: stop when the run has ended and its log holds nothing more."""
        run = client.get(f"/runs/{quoted(run_id)}")
        if run["status"] not in TERMINAL:
            return False
        if run.get("started_at") is None:
            return True
        page = client.get(f"/runs/{quoted(run_id)}/log", offset=position["offset"], limit=PAGE_BYTES)
        return bool(page.get("complete")) and not page.get("data")

    try:
        events = follow(
            client,
            path,
            last_event_id=str(offset) if offset else None,
            idle_timeout=IDLE_CHECK_S,
            on_idle=finished_quietly,
        )
        for event in events:
            if event.event == "end":
                if not _chunk(event.data).get("complete", True):
                    print(
                        f"(the log of run {run_id} ends incomplete: its end was never recorded)",
                        file=sys.stderr,
                    )
                return
            if event.event != "log":
                continue
            chunk = _chunk(event.data)
            write(event.data + "\n" if as_json else chunk.get("data") or "")
            position["offset"] = int(chunk.get("next_offset", position["offset"]))
    except CliError:
        if not finished_quietly():
            raise


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise CliError(f"the log stream sent something that is not JSON: {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise CliError(f"the log stream sent something that is not a log chunk: {data[:80]!r}")
    return chunk


def wait_for_outcome(client: ApiClient, run_id: str) -> dict[str, Any]:
    """The run once it has ended; the terminal event may land a moment after the log completes."""
    deadline = time.monotonic() + OUTCOME_WAIT_S
    while True:
        run: dict[str, Any] = client.get(f"/runs/{quoted(run_id)}")
        if run["status"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise CliError(f"run {run_id}'s log is complete but the run is still {run['status']}")
        time.sleep(OUTCOME_POLL_S)


def outcome_line(run: dict[str, Any]) -> str:
    text = f"run {run['id']} {run['status'].replace('_', ' ')}"
    if run.get("exit_code") is not None and run["status"] != "succeeded":
        text += f" with exit code {run['exit_code']}"
    if run.get("reason") and run["status"] != "succeeded":
        text += f": {run['reason']}"
    return text


def follow_run(client: ApiClient, run_id: str, offset: int = 0) -> int:
    """Follow the log, then report the outcome on stderr: exit 0 when it succeeded, 1 otherwise."""
    try:
        follow_log(client, run_id, offset)
    except KeyboardInterrupt:
        print(f"\nstopped following; run {run_id} goes on (batchyard runs stop {run_id})", file=sys.stderr)
        raise
    run = wait_for_outcome(client, run_id)
    print(outcome_line(run), file=sys.stderr)
    return 0 if run["status"] == "succeeded" else EXIT_RUN_DID_NOT_SUCCEED
