"""Publishes a run's output to `<prefix>.logs.<run>` as it is read.

Chunks go out with `publish_async`, a bounded number in flight per run and across runs: the bound is the
backpressure that stops a process printing faster than JetStream stores (its pipe fills and it blocks),
and it caps the dispatcher's memory at about `in flight x chunk size` however much runs print. A chunk
whose acknowledgement does not come is published again with the same `Nats-Msg-Id`, so JetStream keeps it
once; after such a retry it may sit behind later chunks on the stream, which is why readers place chunks
by their offset header, never by arrival.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import PubAck

from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET, LOG_STEP, LogFd, log_msg_id
from contracts.subjects import logs_subject
from shared.bus.cancellation import raise_if_cancelling

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0
RETRY_DELAY_S = 0.5


@dataclass
class _Chunk:
    headers: dict[str, str]
    data: bytes
    ack: asyncio.Future[PubAck]


class LogPublisher:
    """One run's log writer; `write` is the drivers' LogSink, `finish` publishes the end marker."""

    def __init__(
        self,
        js: JetStreamContext,
        prefix: str,
        run_id: str,
        budget: asyncio.Semaphore,
        *,
        max_in_flight: int = 16,
    ) -> None:
        self.js = js
        self.subject = logs_subject(prefix, run_id)
        self.run_id = run_id
        self.budget = budget
        self.max_in_flight = max_in_flight
        self.offset = 0
        self._in_flight: deque[_Chunk] = deque()

    async def write(self, fd: LogFd, data: bytes, step: str | None = None) -> None:
        if not data:
            return
        headers = {
            "Nats-Msg-Id": log_msg_id(self.run_id, self.offset),
            LOG_OFFSET: str(self.offset),
            LOG_FD: fd,
        }
        if step is not None:
            headers[LOG_STEP] = step
        self.offset += len(data)
        await self.budget.acquire()
        try:
            ack = await self.js.publish_async(self.subject, data, headers=headers)
        except asyncio.CancelledError:
            self.budget.release()
            raise
        except Exception as exc:
            self.budget.release()
            log.warning("log chunk %s could not be sent (%s); retrying", headers["Nats-Msg-Id"], exc)
            await self._publish_until_stored(headers, data)
            return
        ack.add_done_callback(lambda _: self.budget.release())
        self._in_flight.append(_Chunk(headers, data, ack))
        while len(self._in_flight) >= self.max_in_flight:
            await self._settle(self._in_flight.popleft())

    async def finish(self) -> int:
        """Wait until every chunk is stored, then publish the end marker; returns the log's size."""
        while self._in_flight:
            await self._settle(self._in_flight.popleft())
        headers = {
            "Nats-Msg-Id": log_msg_id(self.run_id, self.offset, end=True),
            LOG_OFFSET: str(self.offset),
            LOG_END: "1",
        }
        await self._publish_until_stored(headers, b"")
        return self.offset

    async def _settle(self, chunk: _Chunk) -> None:
        ack = chunk.ack
        await asyncio.wait({ack}, timeout=ACK_TIMEOUT_S)
        if not ack.done():
            problem = "no acknowledgement"
            ack.cancel()
        elif ack.cancelled():
            problem = "cancelled"
        elif ack.exception() is not None:
            problem = repr(ack.exception())
        else:
            return
        log.warning(
            "log chunk %s not stored (%s); publishing it again", chunk.headers["Nats-Msg-Id"], problem
        )
        await self._publish_until_stored(chunk.headers, chunk.data)

    async def _publish_until_stored(self, headers: dict[str, str], data: bytes) -> None:
        while True:
            try:
                await self.js.publish(self.subject, data, headers=headers, timeout=ACK_TIMEOUT_S)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("log publish to %s failed (%s); retrying", self.subject, exc)
                await asyncio.sleep(RETRY_DELAY_S)
