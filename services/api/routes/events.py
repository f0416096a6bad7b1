"""The event history, paged, and its live tail as server-sent events."""

from __future__ import annotations

from aiohttp import web

from contracts.envelope import RecordedEvent
from services.api.context import context
from services.api.models import EventListQuery, EventPage, EventStreamQuery
from services.api.readmodels import queries
from services.api.requests import json_response, last_event_id, read_query
from services.api.routes.endpoint import Endpoint
from services.api.secrets import masked_event

SSE_BATCH = 500
KEEPALIVE_S = 15.0


async def list_events(request: web.Request) -> web.Response:
    query = read_query(request, EventListQuery)
    after = query.after
    if query.cursor:
        after = max(after, queries.decode_cursor(query.cursor))
    events = await context(request).store.read_all(
        after=after, limit=query.limit + 1, stream_id=query.stream, types=query.type or None
    )
    more = len(events) > query.limit
    events = events[: query.limit]
    cursor = queries.encode_cursor(events[-1].position) if more else None
    return json_response(EventPage(items=[masked_event(e) for e in events], next_cursor=cursor))


def _sse(event: RecordedEvent) -> bytes:
    data = masked_event(event).model_dump_json()
    return f"id: {event.position}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Tails the store itself (woken by its NOTIFY), so the stream is gap-free and in global order."""
    ctx = context(request)
    query = read_query(request, EventStreamQuery)
    position = last_event_id(request, "an event position", default=query.after or 0)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 1000\n\n")
        while True:
            generation = ctx.feed.generation
            scanned = await ctx.store.read_all(after=position, limit=SSE_BATCH)
            if not scanned:
                if not await ctx.feed.wait_past(generation, KEEPALIVE_S):
                    await response.write(b": keepalive\n\n")
                continue
            for event in scanned:
                if (query.stream is None or event.stream_id == query.stream) and (
                    not query.type or event.type in query.type
                ):
                    await response.write(_sse(event))
            position = scanned[-1].position
    except ConnectionResetError:
        return response


ENDPOINTS = [
    Endpoint(
        "GET",
        "/events",
        list_events,
        "Event history in global order; filters `stream`, `type` (repeatable), `after`; paged by `cursor`.",
        response=EventPage,
        query=EventListQuery,
        errors=(422,),
        tag="events",
    ),
    Endpoint(
        "GET",
        "/events/stream",
        stream_events,
        "Live tail as server-sent events: `id` is the position, `event` the type, `data` the recorded event. "
        "Resumes after the `Last-Event-ID` header (or `after`).",
        query=EventStreamQuery,
        errors=(400, 422),
        headers=("Last-Event-ID",),
        media_type="text/event-stream",
        tag="events",
    ),
]
