"""JetStream streams every service expects; creating them is idempotent so any service may do it."""

from __future__ import annotations

import contextlib

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import events_stream_name, events_wildcard, logs_stream_name, logs_wildcard

EVENTS_DUPLICATE_WINDOW_S = 600.0
LOGS_MAX_AGE_S = 24 * 3600.0
LOGS_MAX_BYTES = 2 * 1024**3


def stream_configs(prefix: str) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=events_stream_name(prefix),
            subjects=[events_wildcard(prefix)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=logs_stream_name(prefix),
            subjects=[logs_wildcard(prefix)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=LOGS_MAX_AGE_S,
            max_bytes=LOGS_MAX_BYTES,
            discard=DiscardPolicy.OLD,
        ),
    ]


async def ensure_streams(js: JetStreamContext, prefix: str) -> None:
    for config in stream_configs(prefix):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


async def delete_streams(js: JetStreamContext, prefix: str) -> None:
    for config in stream_configs(prefix):
        assert config.name is not None
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(config.name)


async def connect(url: str, name: str) -> Client:
    """A connection that keeps reconnecting: services outlive NATS restarts instead of exiting."""
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
