"""Reading a run's log by offset from the live JetStream stream, or from the archive once it is gone."""

from __future__ import annotations

import os
import uuid

import pytest
from nats.js import JetStreamContext

from contracts.subjects import logs_stream_name, logs_subject
from shared.archive import Archive
from shared.archive.reader import LogPage, LogReader, OffsetBeyondEnd, read_log
from shared.settings import Settings
from tests.integration.conftest import LogPublisher


@pytest.fixture
def base_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
def reader(archive: Archive, js: JetStreamContext, settings: Settings) -> LogReader:
    return LogReader(archive, js, settings.bus_prefix)


def new_run() -> str:
    return str(uuid.uuid4())


async def read_all(reader: LogReader, run_id: str, limit: int) -> tuple[bytes, list[LogPage]]:
    pages = []
    offset = 0
    while True:
        page = await reader.read(run_id, offset, limit)
        pages.append(page)
        assert page.offset == offset
        assert page.next_offset == offset + len(page.data)
        offset = page.next_offset
        if page.complete or not page.data:
            return b"".join(p.data for p in pages), pages


async def archive_log(archive: Archive, run_id: str, data: bytes) -> None:
    for offset in range(0, len(data), 4096):
        await archive.append(run_id, offset, data[offset : offset + 4096])
    await archive.finalize(run_id, len(data))


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_live_pages_concatenate_to_the_log_and_the_last_one_is_complete(
    reader: LogReader, log_publisher: LogPublisher
) -> None:
    run, neighbour = new_run(), new_run()
    data = os.urandom(50_000)
    for offset in range(0, len(data), 1000):
        await log_publisher.chunk(run, offset, data[offset : offset + 1000])
        await log_publisher.chunk(neighbour, offset, b"n" * 1000)
    await log_publisher.end(run, len(data))

    for limit in (777, 1000, 4096, 1024 * 1024):
        content, pages = await read_all(reader, run, limit)
        assert content == data, f"limit {limit}"
        assert pages[-1].complete and pages[-1].next_offset == len(data)
        assert not any(page.complete for page in pages[:-1])


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_any_offset_is_found_among_other_runs_chunks(
    archive: Archive, js: JetStreamContext, settings: Settings, log_publisher: LogPublisher
) -> None:
    run, neighbour = new_run(), new_run()
    data = os.urandom(30_000)
    for offset in range(0, len(data), 300):
        await log_publisher.chunk(neighbour, offset, b"x" * 300)
        await log_publisher.chunk(run, offset, data[offset : offset + 300])
    await log_publisher.end(run, len(data))

    for offset in (0, 1, 299, 300, 12_345, 29_999, 30_000):
        page = await read_log(archive, js, settings.bus_prefix, run, offset, 1000)
        assert page.data == data[offset : offset + 1000]
        assert page.complete == (offset + 1000 >= len(data))


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_a_running_log_reads_what_is_there_and_then_continues(
    reader: LogReader, log_publisher: LogPublisher
) -> None:
    run = new_run()
    await log_publisher.chunk(run, 0, b"first line\n")
    assert await reader.read(run, 0) == LogPage(0, 11, b"first line\n", False)
    assert await reader.read(run, 11) == LogPage(11, 11, b"", False)

    await log_publisher.chunk(run, 11, b"second line\n")
    await log_publisher.end(run, 23)
    assert await reader.read(run, 11) == LogPage(11, 23, b"second line\n", True)
    assert await reader.read(run, 23) == LogPage(23, 23, b"", True)


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_republished_and_out_of_order_chunks_read_back_in_offset_order(
    reader: LogReader, log_publisher: LogPublisher
) -> None:
    run = new_run()
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10, b"e" * 10]
    order = [0, 2, 1, 1, 4, 3, 0]
    for index in order:
        await log_publisher.chunk(run, index * 10, chunks[index], deduplicated=False)
    await log_publisher.end(run, 50)

    for limit in (1, 7, 10, 25, 100):
        content, pages = await read_all(reader, run, limit)
        assert content == b"".join(chunks), f"limit {limit}"
        assert pages[-1].complete


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_the_end_marker_stored_before_the_last_chunk_still_completes_the_log(
    reader: LogReader, log_publisher: LogPublisher
) -> None:
    run = new_run()
    await log_publisher.chunk(run, 0, b"early ")
    await log_publisher.end(run, 11)
    await log_publisher.chunk(run, 6, b"late\n")
    assert await reader.read(run, 0) == LogPage(0, 11, b"early late\n", True)


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_an_offset_past_the_end_of_a_finished_log_is_refused(
    reader: LogReader, log_publisher: LogPublisher
) -> None:
    run = new_run()
    await log_publisher.log(run, b"short", 5)
    with pytest.raises(OffsetBeyondEnd) as refused:
        await reader.read(run, 6)
    assert refused.value.size == 5


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_bad_arguments_are_refused_naming_the_field(reader: LogReader) -> None:
    with pytest.raises(ValueError, match="offset"):
        await reader.read(new_run(), -1)
    with pytest.raises(ValueError, match="limit"):
        await reader.read(new_run(), 0, 0)
    with pytest.raises(ValueError, match="run_id"):
        await reader.read("runs.>", 0)


@pytest.mark.parametrize("archive_kind", ["file"])
async def test_a_run_that_printed_nothing_yet_reads_empty_and_incomplete(reader: LogReader) -> None:
    assert await reader.read(new_run(), 0) == LogPage(0, 0, b"", False)


async def test_the_archive_answers_with_the_same_pages_once_the_live_stream_dropped_the_log(
    archive: Archive, js: JetStreamContext, settings: Settings, log_publisher: LogPublisher
) -> None:
    run = new_run()
    data = os.urandom(100_000)
    await log_publisher.log(run, data, 4096)
    await archive_log(archive, run, data)
    requests = [(0, 1), (0, 4096), (1, 5000), (4095, 2), (50_000, 50_000), (99_999, 10), (100_000, 10)]

    live = [
        await read_log(archive, js, settings.bus_prefix, run, offset, limit) for offset, limit in requests
    ]
    await js.purge_stream(
        logs_stream_name(settings.bus_prefix), subject=logs_subject(settings.bus_prefix, run)
    )
    archived = [
        await read_log(archive, js, settings.bus_prefix, run, offset, limit) for offset, limit in requests
    ]

    assert archived == live
    assert [page.data for page in archived] == [data[offset : offset + limit] for offset, limit in requests]
    assert [page.complete for page in archived] == [False, False, False, False, True, True, True]
    with pytest.raises(OffsetBeyondEnd):
        await read_log(archive, js, settings.bus_prefix, run, 100_001, 10)


async def test_a_log_whose_head_was_discarded_reads_its_head_from_the_archive_and_tail_live(
    archive: Archive, js: JetStreamContext, settings: Settings, log_publisher: LogPublisher, reader: LogReader
) -> None:
    run = new_run()
    data = os.urandom(40_000)
    await log_publisher.log(run, data, 1000)
    await archive_log(archive, run, data)
    await js.purge_stream(
        logs_stream_name(settings.bus_prefix), subject=logs_subject(settings.bus_prefix, run), keep=11
    )

    content, pages = await read_all(reader, run, 3000)
    assert content == data
    assert pages[-1].complete


async def test_a_log_not_archived_yet_and_gone_from_the_stream_reads_as_not_available(
    archive: Archive, js: JetStreamContext, settings: Settings, log_publisher: LogPublisher, reader: LogReader
) -> None:
    run = new_run()
    await log_publisher.log(run, b"0123456789", 2)
    await js.purge_stream(
        logs_stream_name(settings.bus_prefix), subject=logs_subject(settings.bus_prefix, run), keep=2
    )
    assert await reader.read(run, 0) == LogPage(0, 0, b"", False)
    assert await reader.read(run, 8) == LogPage(8, 10, b"89", True)
