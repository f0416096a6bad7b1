"""`GET /runs/{id}/log` and `GET /runs/{id}/log/stream` over logs published as the dispatcher publishes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from contracts.envelope import EventMeta
from contracts.events import RunLost, RunQueued, RunRejected, RunRendered, RunSkipped, RunStarted
from services.api.context import CONTEXT
from services.api.routes import logs as log_routes
from services.api.routes.logs import decode_page
from tests.integration.conftest import LogPublisher

Client = TestClient[Any, Any]
DISPATCHER = EventMeta(actor="dispatcher", correlation_id="test")


async def new_run(api: Client, *, started: bool = True) -> str:
    response = await api.post("/runs", json={"execution": "hello"})
    assert response.status == 202, await response.text()
    run_id: str = (await response.json())["id"]
    if started:
        rid = uuid.UUID(run_id)
        await api.app[CONTEXT].append(
            f"run-{run_id}",
            [
                RunRendered(run_id=rid, driver="local", payload={"command": "true"}, execution_version=1),
                RunStarted(run_id=rid, dispatcher="d1", handle={"pid": 1}),
            ],
            expected_version=1,
            meta=DISPATCHER,
        )
    return run_id


async def page(api: Client, run_id: str, **params: Any) -> dict[str, Any]:
    response = await api.get(f"/runs/{run_id}/log", params=params)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def read_events(
    response: ClientResponse, *, until: str = "end", within_s: float = 20
) -> list[dict[str, Any]]:
    """Server-sent events as dicts (`event`, `id`, parsed `data`) until one of type `until` arrives."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(within_s):
        while True:
            line = (await response.content.readline()).decode()
            assert line, "the stream ended without an end event"
            line = line.rstrip("\n")
            if line:
                if not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    current[key] = json.loads(value) if key == "data" else value
                continue
            if "event" in current:
                events.append(current)
                if current["event"] == until:
                    return events
            current = {}


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["data"] for e in events if e["event"] == "log")


async def test_a_page_has_the_text_the_next_offset_and_whether_the_log_is_complete(
    defined: Client, log_publisher: LogPublisher
) -> None:
    run_id = await new_run(defined)
    await log_publisher.log(run_id, b"hello\nworld\n", 4)
    assert await page(defined, run_id) == {
        "offset": 0,
        "next_offset": 12,
        "data": "hello\nworld\n",
        "complete": True,
    }
    assert await page(defined, run_id, offset=6) == {
        "offset": 6,
        "next_offset": 12,
        "data": "world\n",
        "complete": True,
    }
    assert await page(defined, run_id, limit=3) == {
        "offset": 0,
        "next_offset": 3,
        "data": "hel",
        "complete": False,
    }
    assert await page(defined, run_id, offset=12) == {
        "offset": 12,
        "next_offset": 12,
        "data": "",
        "complete": True,
    }


async def test_a_page_never_ends_inside_a_character_and_pages_concatenate_to_the_log(
    defined: Client, log_publisher: LogPublisher
) -> None:
    text = "aé€😀 ñandú 東京 " * 6
    data = text.encode()
    run_id = await new_run(defined)
    await log_publisher.log(run_id, data, 7)
    for limit in (1, 2, 3, 5, 64):
        offset, pieces = 0, []
        while True:
            body = await page(defined, run_id, offset=offset, limit=limit)
            assert "\ufffd" not in body["data"] and body["next_offset"] > offset
            assert data[offset : body["next_offset"]].decode() == body["data"]
            pieces.append(body["data"])
            offset = body["next_offset"]
            if body["complete"]:
                break
        assert "".join(pieces) == text and offset == len(data)


async def test_bytes_that_are_not_utf8_read_as_replacement_characters_with_byte_offsets(
    defined: Client, log_publisher: LogPublisher
) -> None:
    run_id = await new_run(defined)
    await log_publisher.log(run_id, b"ok\xff\xfeend\xe2\x82", 100)
    body = await page(defined, run_id)
    assert body == {"offset": 0, "next_offset": 9, "data": "ok\ufffd\ufffdend\ufffd", "complete": True}


def test_an_incomplete_character_is_left_for_the_next_page_unless_nothing_follows() -> None:
    euro = "€".encode()
    assert decode_page(b"ab" + euro[:2], final=False) == ("ab", 2)
    assert decode_page(b"ab" + euro[:2], final=True) == ("ab\ufffd", 4)
    assert decode_page(b"\xffab", final=False) == ("\ufffdab", 3)


async def test_a_running_log_reads_what_is_there_and_is_not_complete(
    defined: Client, log_publisher: LogPublisher
) -> None:
    run_id = await new_run(defined)
    assert await page(defined, run_id) == {"offset": 0, "next_offset": 0, "data": "", "complete": False}
    await log_publisher.chunk(run_id, 0, b"first ")
    assert await page(defined, run_id) == {"offset": 0, "next_offset": 6, "data": "first ", "complete": False}
    assert await page(defined, run_id, offset=6) == {
        "offset": 6,
        "next_offset": 6,
        "data": "",
        "complete": False,
    }


async def test_an_offset_past_the_end_is_416_naming_offset_and_an_unknown_run_404(
    defined: Client, log_publisher: LogPublisher
) -> None:
    run_id = await new_run(defined)
    await log_publisher.log(run_id, b"twelve bytes", 5)
    response = await defined.get(f"/runs/{run_id}/log", params={"offset": 13})
    assert response.status == 416 and response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["errors"][0]["field"] == "query.offset" and problem["size"] == 12
    assert (await defined.get(f"/runs/{uuid.uuid4()}/log")).status == 404
    assert (await defined.get(f"/runs/{uuid.uuid4()}/log/stream")).status == 404
    bad = await defined.get(f"/runs/{run_id}/log", params={"offset": -1, "limit": 0})
    assert bad.status == 422
    assert {e["field"] for e in (await bad.json())["errors"]} == {"query.offset", "query.limit"}


async def test_a_run_that_ended_without_starting_has_an_empty_complete_log(defined: Client) -> None:
    run_id = await new_run(defined, started=False)
    await defined.app[CONTEXT].append(
        f"run-{run_id}",
        [RunRejected(run_id=uuid.UUID(run_id), reason="syntax error", line=1, column=3)],
        expected_version=1,
        meta=DISPATCHER,
    )
    assert await page(defined, run_id) == {"offset": 0, "next_offset": 0, "data": "", "complete": True}
    assert (await defined.get(f"/runs/{run_id}/log", params={"offset": 5})).status == 416
    stream = await defined.get(f"/runs/{run_id}/log/stream")
    assert await read_events(stream) == [{"event": "end", "id": "0", "data": {"offset": 0, "complete": True}}]


async def append_first(api: Client, event: RunSkipped | RunQueued) -> str:
    """A run stream that starts as the overlap policy leaves it, without a `RunRequested`."""
    await api.app[CONTEXT].append(f"run-{event.run_id}", [event], expected_version=0, meta=DISPATCHER)
    return str(event.run_id)


async def test_a_skipped_run_has_an_empty_complete_log(defined: Client) -> None:
    skipped = RunSkipped(
        run_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        trigger="manual",
        code="overlap_forbidden",
        reason="still active",
    )
    run_id = await append_first(defined, skipped)
    assert await page(defined, run_id) == {"offset": 0, "next_offset": 0, "data": "", "complete": True}
    stream = await defined.get(f"/runs/{run_id}/log/stream")
    assert await read_events(stream) == [{"event": "end", "id": "0", "data": {"offset": 0, "complete": True}}]


async def test_a_queued_run_has_an_empty_log_that_is_not_complete_yet(defined: Client) -> None:
    run_id = await append_first(
        defined, RunQueued(run_id=uuid.uuid4(), job_id=uuid.uuid4(), trigger="manual")
    )
    assert await page(defined, run_id) == {"offset": 0, "next_offset": 0, "data": "", "complete": False}


async def test_stream_follows_a_live_log_to_its_end(defined: Client, log_publisher: LogPublisher) -> None:
    run_id = await new_run(defined)
    response = await defined.get(f"/runs/{run_id}/log/stream")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")

    async def print_slowly() -> None:
        offset = 0
        for line in (b"one\n", b"two\n", b"three\n"):
            await asyncio.sleep(0.1)
            await log_publisher.chunk(run_id, offset, line)
            offset += len(line)
        await log_publisher.end(run_id, offset)

    printer = asyncio.create_task(print_slowly())
    events = await read_events(response)
    await printer
    assert text_of(events) == "one\ntwo\nthree\n"
    logs = [e for e in events if e["event"] == "log"]
    assert all(e["id"] == str(e["data"]["next_offset"]) for e in logs)
    assert all(e["data"]["fd"] is None for e in logs)
    assert logs[0]["data"]["offset"] == 0
    assert all(a["data"]["next_offset"] == b["data"]["offset"] for a, b in itertools.pairwise(logs))
    assert events[-1] == {"event": "end", "id": "14", "data": {"offset": 14, "complete": True}}


async def test_stream_resumes_from_last_event_id_or_offset(
    defined: Client, log_publisher: LogPublisher
) -> None:
    run_id = await new_run(defined)
    await log_publisher.log(run_id, b"0123456789", 3)
    by_header = await defined.get(f"/runs/{run_id}/log/stream", headers={"Last-Event-ID": "4"})
    events = await read_events(by_header)
    assert text_of(events) == "456789" and events[0]["data"]["offset"] == 4
    by_query = await defined.get(f"/runs/{run_id}/log/stream", params={"offset": 8})
    assert text_of(await read_events(by_query)) == "89"
    beyond = await defined.get(f"/runs/{run_id}/log/stream", params={"offset": 11})
    assert beyond.status == 416
    malformed = await defined.get(f"/runs/{run_id}/log/stream", headers={"Last-Event-ID": "x"})
    assert (
        malformed.status == 400 and (await malformed.json())["errors"][0]["field"] == "header.Last-Event-ID"
    )


async def test_stream_reproduces_a_large_log_exactly_in_bounded_pages(
    defined: Client, log_publisher: LogPublisher
) -> None:
    data = os.urandom(3 * 1024 * 1024).hex().encode()
    run_id = await new_run(defined)
    await log_publisher.log(run_id, data, 64 * 1024)
    events = await read_events(await defined.get(f"/runs/{run_id}/log/stream"), within_s=60)
    logs = [e for e in events if e["event"] == "log"]
    assert text_of(events).encode() == data
    assert max(e["data"]["next_offset"] - e["data"]["offset"] for e in logs) <= log_routes.SSE_PAGE
    assert events[-1]["data"] == {"offset": len(data), "complete": True}


async def test_stream_of_a_run_lost_without_an_end_marker_ends_incomplete(
    defined: Client, log_publisher: LogPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_routes, "QUIET_AFTER_END_S", 0.3)
    monkeypatch.setattr(log_routes, "POLL_S", 0.1)
    run_id = await new_run(defined)
    await log_publisher.chunk(run_id, 0, b"partial")
    response = await defined.get(f"/runs/{run_id}/log/stream")
    await defined.app[CONTEXT].append(
        f"run-{run_id}",
        [RunLost(run_id=uuid.UUID(run_id), reason="dispatcher went away")],
        expected_version=3,
        meta=DISPATCHER,
    )
    events = await read_events(response, within_s=10)
    assert text_of(events) == "partial"
    assert events[-1] == {"event": "end", "id": "7", "data": {"offset": 7, "complete": False}}


async def test_stream_sends_keepalive_comments_while_the_log_is_quiet(
    defined: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_routes, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(log_routes, "POLL_S", 0.1)
    run_id = await new_run(defined)
    response = await defined.get(f"/runs/{run_id}/log/stream")
    async with asyncio.timeout(5):
        lines = [(await response.content.readline()).decode() for _ in range(4)]
    assert ": keepalive\n" in lines
    response.close()
