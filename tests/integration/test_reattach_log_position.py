"""Where an adopted run's log continues: read from the chunks already on JetStream (real NATS)."""

from __future__ import annotations

import uuid

from nats.js import JetStreamContext

from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET
from contracts.subjects import logs_subject
from services.dispatcher.adoption import PublishedLog, published_log
from shared.settings import Settings


async def publish(
    js: JetStreamContext, subject: str, offset: int, fd: str | None, data: bytes, msg_id: str
) -> None:
    headers = {"Nats-Msg-Id": msg_id, LOG_OFFSET: str(offset)}
    if fd is None:
        headers[LOG_END] = "1"
    else:
        headers[LOG_FD] = fd
    await js.publish(subject, data, headers=headers)


async def test_a_run_with_no_published_output_resumes_at_zero(
    settings: Settings, js: JetStreamContext
) -> None:
    assert await published_log(js, settings.bus_prefix, str(uuid.uuid4())) == PublishedLog()


async def test_the_next_offset_is_the_furthest_end_and_each_stream_counted_once(
    settings: Settings, js: JetStreamContext
) -> None:
    """A chunk republished late (after JetStream's duplicate window) sits twice on the stream and after
    later chunks; it still counts once, and other runs' chunks do not count at all."""
    run, other = str(uuid.uuid4()), str(uuid.uuid4())
    subject = logs_subject(settings.bus_prefix, run)
    await publish(js, subject, 0, "stdout", b"hello", "a")
    await publish(js, logs_subject(settings.bus_prefix, other), 0, "stdout", b"not mine", "b")
    await publish(js, subject, 5, "stderr", b"oops\n", "c")
    await publish(js, subject, 10, "stdout", b"!\n", "d")
    await publish(js, subject, 0, "stdout", b"hello", "a-again")
    assert await published_log(js, settings.bus_prefix, run) == PublishedLog(
        12, {"stdout": 7, "stderr": 5}, False
    )
    await publish(js, subject, 12, None, b"", "end")
    assert (await published_log(js, settings.bus_prefix, run)).ended
