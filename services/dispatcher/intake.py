"""The dispatcher's durable consumer, handling messages concurrently.

`shared.bus.consumer.consume` handles one message at a time; starting a run waits on a fork and a
commit, so one at a time would cap the dispatcher at a few hundred starts per second and let a slow
start hold up the rest. Here each message gets its own task, up to `concurrency` at once, and is
acknowledged as soon as its handler returns (for a rendered run: once `RunStarted` is recorded, never
when the run ends). `drain` stops fetching and waits for the handlers in progress, so a shutdown never
abandons a run between its start and its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from contracts.subjects import events_stream_name
from shared.bus.cancellation import raise_if_cancelling
from shared.bus.consumer import REDELIVERY_DELAY_S, Handler, decode, ensure_consumer

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
FETCH_RETRY_S = 0.5


class Intake:
    def __init__(
        self,
        js: JetStreamContext,
        prefix: str,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Handler,
        *,
        concurrency: int,
    ) -> None:
        self.js = js
        self.prefix = prefix
        self.durable = durable
        self.filter_subjects = list(filter_subjects)
        self.handler = handler
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._handling: set[asyncio.Task[None]] = set()
        self._fetching: asyncio.Task[None] | None = None
        self._draining = False

    async def start(self) -> None:
        await ensure_consumer(self.js, self.prefix, self.durable, self.filter_subjects)
        subscription = await self.js.pull_subscribe_bind(self.durable, stream=events_stream_name(self.prefix))
        self._fetching = asyncio.create_task(self._fetch_loop(subscription), name=f"{self.durable}-intake")

    async def drain(self) -> None:
        """Stop fetching and wait for the handlers in progress. The flag matters as much as the cancel:
        on Python 3.11 a cancel that races a fetch's own timeout is swallowed inside `asyncio.wait_for`
        (gh-86296) and surfaces as a timeout, which the loop would otherwise take for an idle poll."""
        self._draining = True
        if self._fetching is not None:
            self._fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetching
        await asyncio.gather(*self._handling, return_exceptions=True)

    async def _fetch_loop(self, subscription: JetStreamContext.PullSubscription) -> None:
        try:
            while not self._draining:
                await self._slots.acquire()
                free = 1
                while free < self.concurrency and not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                try:
                    messages = await subscription.fetch(free, timeout=FETCH_TIMEOUT_S)
                except (TimeoutError, NatsTimeoutError):
                    raise_if_cancelling()
                    messages = []
                except asyncio.CancelledError:
                    for _ in range(free):
                        self._slots.release()
                    raise
                except Exception as exc:
                    raise_if_cancelling()
                    log.warning("%s: fetching failed (%s); trying again", self.durable, exc)
                    messages = []
                    await asyncio.sleep(FETCH_RETRY_S)
                for _ in range(free - len(messages)):
                    self._slots.release()
                if self._draining:
                    await self._give_back(messages)
                    return
                for message in messages:
                    task = asyncio.create_task(self._handle(message))
                    self._handling.add(task)
                    task.add_done_callback(self._handling.discard)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _give_back(self, messages: list[Msg]) -> None:
        """Messages fetched while draining go back at once, for a replica that is not shutting down."""
        for message in messages:
            with contextlib.suppress(Exception):
                await message.nak()
            self._slots.release()

    async def _handle(self, message: Msg) -> None:
        try:
            try:
                event = decode(message.data)
            except ValueError as exc:
                log.error("%s: undecodable message on %s dropped: %s", self.durable, message.subject, exc)
                await message.term()
                return
            try:
                await self.handler(event)
            except Exception:
                log.exception("%s: handling %s %s failed; redelivering", self.durable, event.type, event.id)
                await message.nak(delay=REDELIVERY_DELAY_S)
                return
            await message.ack()
        except Exception:
            log.exception("%s: could not acknowledge a message", self.durable)
        finally:
            self._slots.release()
