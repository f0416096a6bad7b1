"""Durable JetStream consumers for services that react to events.

Replicas of one service share the durable consumer, so each message goes to one of them. Delivery is at
least once: a handler must be idempotent, which in batchyard means appending its outcome at the stream
version it expects, so a redelivered message meets a ConcurrencyError and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.envelope import CloudEvent, RecordedEvent
from contracts.subjects import events_stream_name
from shared.bus.cancellation import raise_if_cancelling
from shared.eventstore.errors import ConcurrencyError

log = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]

FETCH_TIMEOUT_S = 2.0
REDELIVERY_DELAY_S = 1.0


def decode(data: bytes) -> RecordedEvent:
    return CloudEvent.model_validate_json(data).to_recorded()


async def ensure_consumer(
    js: JetStreamContext,
    prefix: str,
    durable: str,
    filter_subjects: Sequence[str],
    *,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 1000,
) -> None:
    stream = events_stream_name(prefix)
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subjects=list(filter_subjects),
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
    )
    await js.add_consumer(stream, config)


async def consume(
    js: JetStreamContext,
    prefix: str,
    durable: str,
    filter_subjects: Sequence[str],
    handler: Handler,
    *,
    batch: int = 100,
    ack_wait_s: float = 30.0,
) -> None:
    """Run `handler` for every event matching the filters, until cancelled.

    A handler that raises gets its message redelivered after a short delay; a message that cannot even
    be decoded is terminated, since no retry can fix it. A ConcurrencyError is the idempotent handler's
    way of saying its outcome was already appended (a redelivery), so the message is acknowledged.
    """
    await ensure_consumer(js, prefix, durable, filter_subjects, ack_wait_s=ack_wait_s)
    subscription = await js.pull_subscribe_bind(durable, stream=events_stream_name(prefix))
    try:
        while True:
            raise_if_cancelling()
            try:
                messages = await subscription.fetch(batch, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, NatsTimeoutError):
                continue
            for message in messages:
                try:
                    event = decode(message.data)
                except ValueError as exc:
                    log.error("%s: undecodable message on %s dropped: %s", durable, message.subject, exc)
                    await message.term()
                    continue
                try:
                    await handler(event)
                except ConcurrencyError as exc:
                    log.debug("%s: %s %s already handled: %s", durable, event.type, event.id, exc)
                except Exception:
                    log.exception("%s: handling %s %s failed; redelivering", durable, event.type, event.id)
                    await message.nak(delay=REDELIVERY_DELAY_S)
                    continue
                await message.ack()
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
