"""Secrets in the dispatcher: the sealed payload opened in memory, the log masked before it leaves.

See docs/decisions/0140-secrets-at-render-and-dispatch.md. A `RunRendered` with `sealed` carries the real
payload encrypted for this key; the dispatcher opens it just before `prepare`, hands the cleartext payload
to the driver, and publishes the run's log through `MaskingLogPublisher`, so no byte of a secret's
cleartext reaches the bus. A sealed payload without a key (or for another key) fails the run with a
reason, never a crash.
"""

from __future__ import annotations

import asyncio
from typing import cast

from nats.js import JetStreamContext

from contracts.base import JsonObject
from contracts.events.runs import RunRendered
from contracts.logs import LogFd
from services.dispatcher.drivers.base import StartFailed
from services.dispatcher.logs import LogPublisher
from shared.masking import StreamMasker, mask_text
from shared.secrets import Keyring, SecretError, open_rendered, require_keyring

MASK_EVERY_LENGTH = 1
"""Failure reasons are recorded: they mask every secret, however short (the log keeps 0082's minimum)."""


def open_payload(rendered: RunRendered, keyring: Keyring | None) -> tuple[JsonObject, frozenset[str]]:
    """The payload the driver must run, with the secrets it holds; StartFailed when it cannot be opened."""
    return open_sealed(rendered.payload, rendered.sealed, keyring)


def open_sealed(
    payload: JsonObject, sealed: str | None, keyring: Keyring | None
) -> tuple[JsonObject, frozenset[str]]:
    """`payload` as rendered for display, or the real one `sealed` carries when it holds secrets."""
    if sealed is None:
        return payload, frozenset()
    try:
        opened = open_rendered(sealed, require_keyring(keyring))
    except SecretError as exc:
        raise StartFailed(f"the run's payload holds secrets and cannot be opened: {exc}") from None
    if not isinstance(opened.payload, dict):
        raise StartFailed("the run's sealed payload is not a JSON object")
    return cast(JsonObject, opened.payload), opened.secrets


def mask_reason(reason: str, secrets: frozenset[str]) -> str:
    """A driver's refusal can quote the payload (`command not found: …`): mask it before it is recorded."""
    return mask_text(reason, secrets, MASK_EVERY_LENGTH) if secrets else reason


class MaskingLogPublisher(LogPublisher):
    """A run's log with every secret's cleartext replaced by `***` before it is published.

    One `StreamMasker` per fd and pipeline step keeps held-back bytes in their own stream; the parent's
    running offset is that of the masked combined log, which is the only log that exists outside the
    dispatcher. `finish` flushes what the maskers hold back before the end marker.
    """

    def __init__(
        self,
        js: JetStreamContext,
        prefix: str,
        run_id: str,
        budget: asyncio.Semaphore,
        secrets: frozenset[str],
        *,
        max_in_flight: int = 16,
    ) -> None:
        super().__init__(js, prefix, run_id, budget, max_in_flight=max_in_flight)
        self._maskers: dict[tuple[LogFd, str | None], StreamMasker] = {}
        self._secrets = secrets

    async def write(self, fd: LogFd, data: bytes, step: str | None = None) -> None:
        masker = self._maskers.get((fd, step))
        if masker is None:
            masker = self._maskers[(fd, step)] = StreamMasker(self._secrets)
        await super().write(fd, masker.feed(data), step)

    async def finish(self) -> int:
        for (fd, step), masker in self._maskers.items():
            await super().write(fd, masker.flush(), step)
        return await super().finish()
