"""Waiting in tests for what other processes or tasks do at their own pace, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 20, interval_s: float = 0.05
) -> Any:
    """The first truthy result of `check`; fails the test when none comes within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval_s)
