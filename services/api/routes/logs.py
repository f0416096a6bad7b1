"""A run's log by byte offset, and its live tail as server-sent events.

Bytes come from the process's one `LogReader` (live stream first, then the archive; 0062). The API
answers text: a page never ends inside a UTF-8 character, so `next_offset` may stop short of the bytes
read, and bytes that are not UTF-8 are shown as U+FFFD while offsets stay byte offsets (0122).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
import uuid
from dataclasses import dataclass

from aiohttp import web
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts import streams
from contracts.events import RunSkipped
from contracts.subjects import logs_subject
from services.api.context import ApiContext, context
from services.api.domain.runs import started
from services.api.models import LogPageView, LogQuery, LogStreamQuery
from services.api.problems import ProblemError
from services.api.requests import json_response, last_event_id, path_uuid, read_query
from services.api.routes.endpoint import Endpoint
from shared.archive.reader import LogReader, OffsetBeyondEnd
from shared.domain.run_lifecycle import RunState, run_state

LONGEST_CHARACTER = 4
SSE_PAGE = 256 * 1024
KEEPALIVE_S = 15.0
POLL_S = 1.0
"""A follower is woken by the run's chunks as they are published; the poll is the fallback for what
publishes nothing (an archive sealed after the live stream lost the bytes)."""
QUIET_AFTER_END_S = 5.0
"""After a run's end is recorded, how long a follower waits for the rest of a log whose end marker never
comes (a dispatcher that died records none) before ending the stream as incomplete."""


@dataclass(frozen=True)
class TextPage:
    offset: int
    next_offset: int
    text: str
    complete: bool

    @property
    def empty(self) -> bool:
        return self.next_offset == self.offset


def decode_page(data: bytes, *, final: bool) -> tuple[str, int]:
    """The text of `data` and how many of its bytes that text used: a character cut off at the end is
    left for the next page, unless `final` (nothing follows), when it becomes U+FFFD like any other
    invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=final)
    pending, _ = decoder.getstate()
    return text, len(data) - len(pending)


async def read_text(reader: LogReader, run_id: uuid.UUID, offset: int, limit: int) -> TextPage:
    page = await reader.read(str(run_id), offset, limit)
    text, used = decode_page(page.data, final=page.complete)
    if used == 0 and len(page.data) == limit < LONGEST_CHARACTER:
        # The limit is smaller than the character at `offset`: hand out that one character.
        page = await reader.read(str(run_id), offset, LONGEST_CHARACTER)
        text, used = decode_page(page.data, final=page.complete)
    return TextPage(offset, offset + used, text, page.complete)


def _beyond_end(offset: int, size: int) -> ProblemError:
    reason = f"{offset} is past the end of the log ({size} bytes)"
    return ProblemError(
        416,
        "Offset beyond the end",
        f"query.offset: {reason}",
        "offset-beyond-end",
        size=size,
        errors=[{"field": "query.offset", "reason": reason}],
    )


@dataclass(frozen=True)
class _Run:
    state: RunState
    skipped: bool
    """The overlap policy skipped it (`RunSkipped`): its stream has no lifecycle, and never will."""

    @property
    def printed_nothing(self) -> bool:
        """Skipped, or ended without ever starting (rejected, stopped before it started, refused by the
        driver): its log is empty and complete even where no end marker was sent."""
        return self.skipped or (self.state.terminal and not started(self.state))


async def _read(ctx: ApiContext, run_id: uuid.UUID, run: _Run, offset: int, limit: int) -> TextPage:
    try:
        page = await read_text(ctx.logs, run_id, offset, limit)
    except OffsetBeyondEnd as exc:
        raise _beyond_end(exc.offset, exc.size) from None
    if page.empty and not page.complete and run.printed_nothing:
        if offset > 0:
            raise _beyond_end(offset, 0)
        return TextPage(0, 0, "", True)
    return page


async def _existing_run(ctx: ApiContext, run_id: uuid.UUID) -> _Run:
    """The run, if its stream holds anything: a queued run has no lifecycle yet but will start, so its
    log is empty until then, and followed until it ends."""
    events = await ctx.store.read_stream(streams.stream_id(streams.RUN, run_id))
    if not events:
        raise ProblemError(404, "Not Found", f"no run {run_id}", "not-found")
    return _Run(run_state(events), any(event.type == RunSkipped.event_type() for event in events))


async def get_log(request: web.Request) -> web.Response:
    ctx = context(request)
    run_id = path_uuid(request, "run_id")
    query = read_query(request, LogQuery)
    run = await _existing_run(ctx, run_id)
    page = await _read(ctx, run_id, run, query.offset, query.limit)
    return json_response(
        LogPageView(offset=page.offset, next_offset=page.next_offset, data=page.text, complete=page.complete)
    )


def _sse(event: str, event_id: int, data: dict[str, object]) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\nid: {event_id}\ndata: {body}\n\n".encode()


def _log_event(page: TextPage) -> bytes:
    """`fd` is null: a page may span chunks of both stdout and stderr, and the reader does not say which."""
    data = {"offset": page.offset, "next_offset": page.next_offset, "data": page.text, "fd": None}
    return _sse("log", page.next_offset, data)


def _end_event(offset: int, complete: bool) -> bytes:
    return _sse("end", offset, {"offset": offset, "complete": complete})


class _Wakeup:
    """Set when the run publishes a chunk; subscribed only once the follower reaches the live tail."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.subscription: Subscription | None = None

    async def _seen(self, _: Msg) -> None:
        self.event.set()

    async def subscribe(self, ctx: ApiContext, run_id: uuid.UUID) -> None:
        nc = ctx.runtime.nc
        self.subscription = await nc.subscribe(
            logs_subject(ctx.runtime.settings.bus_prefix, run_id), cb=self._seen
        )

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.event.wait()

    async def close(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await self.subscription.unsubscribe()


async def stream_log(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    run_id = path_uuid(request, "run_id")
    query = read_query(request, LogStreamQuery)
    offset = last_event_id(request, "a log offset", default=query.offset or 0)
    run = await _existing_run(ctx, run_id)
    page = await _read(ctx, run_id, run, offset, SSE_PAGE)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    wakeup = _Wakeup()
    ended_seen: float | None = None
    last_write = time.monotonic()
    try:
        await response.write(b"retry: 1000\n\n")
        while True:
            if not page.empty:
                await response.write(_log_event(page))
                last_write = time.monotonic()
                ended_seen = None
            if page.complete:
                await response.write(_end_event(page.next_offset, True))
                break
            offset = page.next_offset
            if page.empty:
                if wakeup.subscription is None:
                    await wakeup.subscribe(ctx, run_id)
                else:
                    run = await _existing_run(ctx, run_id)
                    if run.state.terminal:
                        ended_seen = ended_seen or time.monotonic()
                        if time.monotonic() - ended_seen >= QUIET_AFTER_END_S:
                            await response.write(_end_event(offset, False))
                            break
                    await wakeup.wait(POLL_S)
                    if time.monotonic() - last_write >= KEEPALIVE_S:
                        await response.write(b": keepalive\n\n")
                        last_write = time.monotonic()
            wakeup.event.clear()
            page = await _read(ctx, run_id, run, offset, SSE_PAGE)
    except ConnectionResetError:
        pass
    finally:
        await wakeup.close()
    return response


ENDPOINTS = [
    Endpoint(
        "GET",
        "/runs/{run_id}/log",
        get_log,
        "The run's log as UTF-8 text from byte `offset`: `next_offset` is where the next page starts (a "
        "page never ends inside a character; invalid bytes show as U+FFFD) and `complete` tells that the "
        "log ends there. From the live stream or the archive, with the same offsets. An offset past the "
        "end of a finished log is 416.",
        response=LogPageView,
        query=LogQuery,
        errors=(404, 416, 422),
        tag="runs",
    ),
    Endpoint(
        "GET",
        "/runs/{run_id}/log/stream",
        stream_log,
        "Follow the run's log as server-sent events: `event: log` with `id` = the next offset and `data` = "
        '`{"offset", "next_offset", "data", "fd"}`, then `event: end` with `{"offset", "complete"}` when '
        "the log ends. Resumes from the `Last-Event-ID` header (or `offset`).",
        query=LogStreamQuery,
        errors=(400, 404, 416, 422),
        headers=("Last-Event-ID",),
        media_type="text/event-stream",
        tag="runs",
    ),
]
