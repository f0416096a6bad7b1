"""Server-sent events for the CLI: parse a `text/event-stream` and follow it across reconnections.

The API's streams carry an `id:` that is the resume point (an event position, a log offset), so a
dropped connection is picked up again with `Last-Event-ID` and nothing is printed twice or skipped.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cli.client import ApiClient, ApiUnreachable
from cli.errors import CliError

RECONNECT_DELAY_S = 0.5
RECONNECT_ATTEMPTS = 20


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None


def parse_events(lines: Iterable[bytes]) -> Iterator[SseEvent]:
    """Events of a stream (WHATWG rules: `field: value` lines, a blank line ends an event, `:` is a
    comment); comments and events without data (keepalives, `retry:`) yield nothing."""
    event, event_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def follow(
    client: ApiClient,
    path: str,
    query: dict[str, Any] | None = None,
    *,
    last_event_id: str | None = None,
    idle_timeout: float | None = None,
    on_idle: Callable[[], bool] | None = None,
) -> Iterator[SseEvent]:
    """Events of `path` until the caller stops reading (a log's `end` event, Ctrl-C).

    A connection that closes or breaks is reopened after `RECONNECT_DELAY_S` with `Last-Event-ID` set
    to the last id seen, so an API restart is survived; an API that was never reached, an error answer,
    or `RECONNECT_ATTEMPTS` failures in a row end it with a CliError. When no byte arrives for
    `idle_timeout` seconds, `on_idle()` says whether to stop.
    """
    failures = 0
    connected = False
    while True:
        try:
            answer = client.open_stream(path, query, last_event_id=last_event_id, read_timeout=idle_timeout)
        except ApiUnreachable:
            failures += 1
            if failures >= RECONNECT_ATTEMPTS or not connected:
                raise
            time.sleep(RECONNECT_DELAY_S)
            continue
        connected = True
        try:
            with answer:
                for event in parse_events(answer):
                    failures = 0
                    if event.id is not None:
                        last_event_id = event.id
                    yield event
        except TimeoutError:
            if on_idle is not None and on_idle():
                return
            continue
        except (OSError, http.client.HTTPException):
            pass
        failures += 1
        if failures >= RECONNECT_ATTEMPTS:
            raise CliError(f"the stream {path} kept closing; stopped following after {failures} attempts")
        time.sleep(RECONNECT_DELAY_S)
