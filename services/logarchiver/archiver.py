"""The log archiver: one durable consumer on the logs stream writes every run's chunks to the archive.

Delivery is at least once and, after a redelivery, out of order. Neither matters: the archive skips
bytes it already has, and a chunk that lands beyond the bytes written so far first pulls the missing
range from the live stream (where it still is), so chunks never wait for each other and a replica that
sees only some of a run's chunks still assembles the whole log. The end marker seals the log and
records `RunLogArchived` once (see recording.py). Sealing runs beside the consumer, one task per run,
so a large upload does not hold up other runs' chunks; its message is kept alive meanwhile.
See docs/decisions/0060-log-archiver-consumer.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.logs import LOG_END, LOG_OFFSET
from contracts.subjects import logs_stream_name, logs_wildcard
from services.logarchiver.recording import record_archived
from shared.archive import Archive, ArchivedLog, ArchiveError, LogGap
from shared.archive.live import LiveLog
from shared.eventstore import EventStore

log = logging.getLogger(__name__)

DURABLE = "logarchiver"
FETCH_BATCH = 64
FETCH_TIMEOUT_S = 1.0
ACK_WAIT_S = 60.0
MAX_ACK_PENDING = 10_000
FILL_PAGE = 4 * 1024 * 1024
CONCURRENT_SEALS = 4
LOST_BYTES_DELIVERIES = 6
LOST_RUNS_REMEMBERED = 1024
MAX_RETRY_DELAY_S = 30.0


class LiveBytesMissing(Exception):
    """Bytes the archive lacks are not on the live stream (not yet, or no longer)."""


class LogArchiver:
    def __init__(self, js: JetStreamContext, prefix: str, store: EventStore, archive: Archive) -> None:
        self._js = js
        self._prefix = prefix
        self._store = store
        self._archive = archive
        self._live = LiveLog(js, prefix)
        self._sealing: dict[str, asyncio.Task[None]] = {}
        self._lost: OrderedDict[str, None] = OrderedDict()
        self._seal_slots = asyncio.Semaphore(CONCURRENT_SEALS)

    async def prepare(self) -> None:
        """Create (or update) the durable consumer, so no log message is missed from here on."""
        await _ensure_consumer(self._js, logs_stream_name(self._prefix), logs_wildcard(self._prefix))

    async def run(self) -> None:
        """Consume until cancelled; unfinished seals are cancelled too and their markers redelivered."""
        subscription = await self._js.pull_subscribe_bind(DURABLE, stream=logs_stream_name(self._prefix))
        try:
            while True:
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
                except (TimeoutError, NatsTimeoutError):
                    continue
                for message in messages:
                    await self._handle(message)
        finally:
            for task in list(self._sealing.values()):
                task.cancel()
            await asyncio.gather(*self._sealing.values(), return_exceptions=True)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _handle(self, message: Msg) -> None:
        run_id = message.subject.rpartition(".")[2]
        headers = message.headers or {}
        try:
            offset = int(headers[LOG_OFFSET])
        except (KeyError, ValueError):
            log.error("log message on %s without a valid offset dropped", message.subject)
            await message.term()
            return
        if run_id in self._lost:
            await message.term()
            return
        if LOG_END in headers:
            self._seal_later(run_id, offset, message)
            return
        try:
            await self._write(run_id, offset, message.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._retry(message, run_id, exc)
            return
        await message.ack()

    async def _write(self, run_id: str, offset: int, data: bytes) -> None:
        try:
            await self._archive.append(run_id, offset, data)
        except LogGap as gap:
            await self._fill(run_id, gap.offset)
            await self._archive.append(run_id, offset, data)

    async def _fill(self, run_id: str, until: int) -> None:
        """Copy the bytes the archive lacks before `until` from the live stream."""
        written = start = await self._archive.written(run_id)
        if written < until:
            log.info("run %s: copying bytes %d..%d from the live stream", run_id, start, until)
        while written < until:
            page = await self._live.read(run_id, written, min(FILL_PAGE, until - written), known_end=until)
            if page is None or not page.data:
                raise LiveBytesMissing(f"run {run_id}: bytes {written}..{until} are not on the live stream")
            written = await self._archive.append(run_id, written, page.data)

    def _seal_later(self, run_id: str, size: int, message: Msg) -> None:
        before = self._sealing.get(run_id)
        task = asyncio.create_task(self._seal(run_id, size, message, before), name=f"seal-{run_id}")
        self._sealing[run_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._sealing.get(run_id) is done:
                del self._sealing[run_id]

        task.add_done_callback(forget)

    async def _seal(self, run_id: str, size: int, message: Msg, before: asyncio.Task[None] | None) -> None:
        """Seal the log and record it; a duplicate end marker waits for the first and finds it done."""
        async with _kept_alive(message):
            if before is not None:
                await asyncio.wait({before})
            async with self._seal_slots:
                try:
                    sealed = await self._seal_log(run_id, size)
                    recorded = await record_archived(self._store, sealed)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._retry(message, run_id, exc)
                    return
        if recorded:
            log.info("archived the log of run %s: %d bytes at %s", run_id, sealed.bytes, sealed.location)
        await message.ack()

    async def _seal_log(self, run_id: str, size: int) -> ArchivedLog:
        try:
            return await self._archive.finalize(run_id, size)
        except LogGap:
            await self._fill(run_id, size)
            return await self._archive.finalize(run_id, size)

    async def _retry(self, message: Msg, run_id: str, exc: Exception) -> None:
        """Redeliver later with backoff; give up only where no retry can help, loudly."""
        deliveries = message.metadata.num_delivered or 1
        permanent = isinstance(exc, ValueError) or (
            isinstance(exc, ArchiveError) and not isinstance(exc, LogGap)
        )
        if permanent or (isinstance(exc, LiveBytesMissing) and deliveries >= LOST_BYTES_DELIVERIES):
            log.error("log of run %s cannot be archived, its messages are dropped: %s", run_id, exc)
            self._lost[run_id] = None
            while len(self._lost) > LOST_RUNS_REMEMBERED:
                self._lost.popitem(last=False)
            await message.term()
            return
        delay = min(MAX_RETRY_DELAY_S, 0.25 * 2**deliveries)
        log.warning("log of run %s: %s; retrying in %.1f s", run_id, exc, delay)
        await message.nak(delay=delay)


async def _ensure_consumer(js: JetStreamContext, stream: str, subject: str) -> None:
    config = ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subject,
        ack_wait=ACK_WAIT_S,
        max_ack_pending=MAX_ACK_PENDING,
    )
    await js.add_consumer(stream, config)


@contextlib.asynccontextmanager
async def _kept_alive(message: Msg) -> AsyncIterator[None]:
    """Tell JetStream the message is still being worked on, so a long upload is not redelivered."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            await message.in_progress()

    heartbeat = asyncio.create_task(beat())
    try:
        yield
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await heartbeat
