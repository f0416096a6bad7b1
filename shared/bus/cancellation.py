"""A guard for loops that must stop when their task is cancelled.

On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising when a cancellation
arrives just as the inner awaitable completes, and nats-py's `fetch` waits through such a `wait_for`.
The cancellation is then lost and a relay or projector keeps looping after its owner cancelled it,
so shutdown hangs. Each long-running loop calls `raise_if_cancelling` once per round.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
