"""Stream ids are `<stream type>-<key>`, so the type of a stream can be read from its id alone."""

from __future__ import annotations

import uuid

EXECUTION = "execution"
DIMENSION = "dimension"
STATE = "state"
JOB = "job"
RUN = "run"
# One stream per scheduled job (keyed by the job id): the ticks its scheduler skipped, as ranges.
SCHEDULE = "schedule"

STREAM_TYPES = (EXECUTION, DIMENSION, STATE, JOB, RUN, SCHEDULE)

STATE_STREAM_ID = f"{STATE}-main"


def stream_id(stream_type: str, key: str | uuid.UUID) -> str:
    return f"{stream_type}-{key}"


def stream_type_of(stream: str) -> str:
    head, sep, _ = stream.partition("-")
    if not sep or head not in STREAM_TYPES:
        raise ValueError(f"not a batchyard stream id: {stream!r}")
    return head


def stream_key(stream: str) -> str:
    stream_type_of(stream)
    return stream.partition("-")[2]
