"""NATS subjects and JetStream stream names.

The subject carries the stream *type* and the event type, never user-chosen names, so a subject is always
a valid NATS token sequence; the stream id travels in the CloudEvents `subject` attribute.
A prefix (default `batchyard`) lets several installations or test runs share one NATS server.
"""

from __future__ import annotations

import uuid

DEFAULT_PREFIX = "batchyard"


def events_subject(prefix: str, stream_type: str, event_type: str) -> str:
    return f"{prefix}.events.{stream_type}.{event_type}"


def events_wildcard(prefix: str) -> str:
    return f"{prefix}.events.>"


def event_type_filter(prefix: str, event_type: str) -> str:
    return f"{prefix}.events.*.{event_type}"


def logs_subject(prefix: str, run_id: uuid.UUID | str) -> str:
    return f"{prefix}.logs.{run_id}"


def logs_wildcard(prefix: str) -> str:
    return f"{prefix}.logs.>"


def render_preview_subject(prefix: str) -> str:
    return f"{prefix}.render.preview"


def events_stream_name(prefix: str) -> str:
    return f"{_stream_token(prefix)}_EVENTS"


def logs_stream_name(prefix: str) -> str:
    return f"{_stream_token(prefix)}_LOGS"


def _stream_token(prefix: str) -> str:
    return prefix.upper().replace(".", "_").replace("-", "_")
