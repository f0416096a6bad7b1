"""The dispatcher's durable consumer, handling messages concurrently.

`shared.bus.consumer.consume` handles one message at a time; starting a run waits on a fork and a
commit, so one at a time would cap the dispatcher at a few hundred starts per second and let a slow
start hold up the rest. Here each message gets its own task, up to `concurrency` at once, and is
acknowledged as soon as its handler returns (for a rendered run: once `RunStarted` is recorded, never
when the run ends). `drain` stops fetching and waits for the handlers in progress, so a shutdown never
abandons a run between its start and its record.

A handler that must wait long before it can finish (a scheduled run staged ahead of its tick, decision
0175) enters `parked()`: its slot goes back to the fetch loop, so the wait holds up nothing else, and
the message is kept from redelivery by progress reports until the handler returns. Raising `HandBack`
returns the message at once for another replica, without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Sequence

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from contracts.subjects import events_stream_name
from shared.bus.cancellation import raise_if_cancelling
from shared.bus.consumer import REDELIVERY_DELAY_S, Handler, decode, ensure_consumer

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
FETCH_RETRY_S = 0.5
ACK_WAIT_S = 30.0
PROGRESS_EVERY_S = ACK_WAIT_S / 3
# Parked messages stay unacknowledged; JetStream's default of 1,000 would stop deliveries at 1,000
# staged runs.
MAX_ACK_PENDING = 50_000


class HandBack(Exception):
    """The handler lets go of its message unhandled (its replica is shutting down): another replica
    gets it at once."""


class _Delivery:
    def __init__(self, message: Msg, slots: asyncio.Semaphore) -> None:
        self.message = message
        self.slots = slots
        self.slot_held = True

    def release_slot(self) -> None:
        if self.slot_held:
            self.slot_held = False
            self.slots.release()

    async def report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            try:
                await self.message.in_progress()
            except Exception as exc:
                raise_if_cancelling()
                log.warning("could not report progress on a parked message: %s", exc)


_delivery: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar("intake_delivery", default=None)


@contextlib.asynccontextmanager
async def parked() -> AsyncIterator[None]:
    """Give the current handler's slot back and keep its message from redelivery while inside; outside
    an intake handler it does nothing."""
    delivery = _delivery.get()
    if delivery is None:
        yield
        return
    delivery.release_slot()
    progress = asyncio.create_task(delivery.report_progress())
    try:
        yield
    finally:
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)


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
        await ensure_consumer(
            self.js,
            self.prefix,
            self.durable,
            self.filter_subjects,
            ack_wait_s=ACK_WAIT_S,
            max_ack_pending=MAX_ACK_PENDING,
        )
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
        delivery = _Delivery(message, self._slots)
        _delivery.set(delivery)
        try:
            try:
                event = decode(message.data)
            except ValueError as exc:
                log.error("%s: undecodable message on %s dropped: %s", self.durable, message.subject, exc)
                await message.term()
                return
            try:
                await self.handler(event)
            except HandBack:
                await message.nak()
                return
            except Exception:
                log.exception("%s: handling %s %s failed; redelivering", self.durable, event.type, event.id)
                await message.nak(delay=REDELIVERY_DELAY_S)
                return
            await message.ack()
        except Exception:
            log.exception("%s: could not acknowledge a message", self.durable)
        finally:
            delivery.release_slot()
