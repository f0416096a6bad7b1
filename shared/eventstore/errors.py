"""Errors of the event store that callers are expected to handle."""

from __future__ import annotations


class ConcurrencyError(Exception):
    """The stream was not at the version the writer expected: someone else appended first."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, not the expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
