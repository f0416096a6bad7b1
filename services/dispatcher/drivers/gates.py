"""Gate shells forked ahead of time, so starting a local run costs a pipe write instead of a fork.

Forking and exec'ing the gate shell, then reading its start time from /proc, took 1.5-2 ms of a run's
path to `RunStarted` (docs/decisions/0176). A pooled gate is the same `/bin/sh` in its own session with
its own pipes, started with an empty environment. It reads the run's working directory, environment and
argv from its stdin, then, like the plain gate, waits for one more line before it `exec`s the command;
a pipe closed before that line makes it exit 125 without running anything, whoever closed it (a discard,
a lost append race, a dispatcher that died). So the start gate of decision 0050 holds as before: the
process exists before `RunStarted` is appended, the command runs only once the dispatcher says so.

Values travel as a count of lines followed by the lines, read by shell builtins alone (no fork), so any
byte but NUL passes unchanged. A run the protocol cannot carry exactly (a NUL, an environment name the
shell cannot export or treats specially, a very large spec) takes the plain gate instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contracts.logs import LogFd

log = logging.getLogger(__name__)

POOLED_GATE_SCRIPT = r"""
_by_read() {
    IFS= read -r _by_n || exit 125
    _by_v=
    _by_i=0
    while [ "$_by_i" -lt "$_by_n" ]; do
        IFS= read -r _by_l || exit 125
        if [ "$_by_i" -eq 0 ]; then _by_v=$_by_l; else _by_v="$_by_v
$_by_l"; fi
        _by_i=$((_by_i + 1))
    done
}
_by_read
if [ -n "$_by_v" ]; then cd -P -- "$_by_v" || exit 125; unset OLDPWD; fi
_by_read
_by_k=$_by_v
_by_j=0
while [ "$_by_j" -lt "$_by_k" ]; do _by_read; export "$_by_v" || exit 125; _by_j=$((_by_j + 1)); done
_by_read
_by_k=$_by_v
_by_j=0
set --
while [ "$_by_j" -lt "$_by_k" ]; do _by_read; set -- "$@" "$_by_v"; _by_j=$((_by_j + 1)); done
IFS= read -r _by_go || exit 125
exec "$@"
"""
MAX_SPEC_BYTES = 16 * 1024
"""Larger specs take the plain gate: the shell reads its stdin a byte at a time, and the write must fit
the pipe so it never blocks the event loop."""
_EXPORTABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_OWNED = frozenset({"PWD", "OLDPWD", "CDPATH", "IFS", "PPID", "OPTIND", "ENV", "PS4"})
"""Names the shell sets or interprets itself: with the plain gate the process sees what the shell made
of them, so a run that sets one keeps the plain gate and gets exactly that."""


def encode_spec(argv: list[str], env: dict[str, str], cwd: str | None) -> bytes | None:
    """What a pooled gate reads before its release line; None when the run needs the plain gate."""
    names = list(env)
    if any(
        not _EXPORTABLE.fullmatch(name) or name in _SHELL_OWNED or name.startswith("_by_") for name in names
    ):
        return None
    values = [cwd or "", str(len(env)), *(f"{name}={env[name]}" for name in names), str(len(argv)), *argv]
    if any("\0" in value for value in values):
        return None
    parts = []
    for value in values:
        lines = value.split("\n")
        parts.append(f"{len(lines)}\n")
        parts.extend(f"{line}\n" for line in lines)
    try:
        spec = "".join(parts).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    return spec if len(spec) <= MAX_SPEC_BYTES else None


@dataclass
class Gate:
    """A gate shell with its pipes: `gate` is the write end of its stdin, `stdout`/`stderr` the read
    ends of its output; `proc_start` its kernel start time, taken while it waited in the pool."""

    process: subprocess.Popen[bytes]
    gate: int
    stdout: int
    stderr: int
    proc_start: int | None
    readers: dict[LogFd, tuple[asyncio.StreamReader, asyncio.BaseTransport]] = field(default_factory=dict)
    """The output pipes connected to the event loop (`connect` in local.py), which owns them from then."""

    def close(self) -> None:
        """Close every pipe end (the shell exits 125 at once) and reap the shell."""
        for _, transport in self.readers.values():
            transport.close()
        owned = (self.gate,) if self.readers else (self.gate, self.stdout, self.stderr)
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


class GatePool:
    """Up to `size` pooled gates, their output pipes already connected to the event loop. A taken gate
    is replaced only once a run of this driver has been launched or discarded (`refill_soon`): forking
    then keeps off every run's path to `RunStarted`. (Forking in a worker thread instead held the GIL
    against the run being prepared and cost more than it saved.)"""

    def __init__(
        self, size: int, spawn: Callable[[], Gate], connect: Callable[[Gate], Awaitable[None]]
    ) -> None:
        self.size = size
        self._spawn = spawn
        self._connect = connect
        self._ready: list[Gate] = []
        self._refilling: asyncio.Task[None] | None = None
        self._closed = False

    def take(self, spec: bytes) -> Gate | None:
        """A waiting gate that has been handed `spec`; None when none is ready (the caller forks a
        plain gate)."""
        while self._ready:
            gate = self._ready.pop(0)
            if gate.process.poll() is not None:
                gate.close()
                continue
            try:
                written = os.write(gate.gate, spec)
            except OSError:
                written = -1
            if written == len(spec):
                return gate
            gate.close()
        return None

    def refill_soon(self) -> None:
        if self._closed or len(self._ready) >= self.size:
            return
        if self._refilling is None or self._refilling.done():
            self._refilling = asyncio.get_running_loop().create_task(self.fill(), name="local-gate-pool")

    async def fill(self) -> None:
        """Fork and connect gates, one per turn of the loop, until the pool is full or forking fails."""
        while not self._closed and len(self._ready) < self.size:
            try:
                gate = self._spawn()
            except Exception as exc:
                log.warning("could not fork a gate for the pool (%s); runs fork their own", exc)
                return
            try:
                await self._connect(gate)
            except BaseException:
                gate.close()
                raise
            if self._closed:
                gate.close()
                return
            self._ready.append(gate)
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop refilling and end the waiting gates; none of them ever ran a command."""
        self._closed = True
        if self._refilling is not None:
            with contextlib.suppress(Exception):
                await self._refilling
        gates, self._ready = self._ready, []
        for gate in gates:
            gate.close()
