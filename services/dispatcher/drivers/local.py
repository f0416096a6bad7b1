"""Runs as local processes, one process group each, held at a gate until `RunStarted` is recorded.

The gate is a `/bin/sh` that waits for one line on its stdin before it `exec`s the command: the pid (and
so the handle) exists before the run may begin, and if the dispatcher dies or loses the append race the
pipe closes and the shell exits without ever running the command. Once the group leader exits, whatever
it left behind in its group is killed: nothing a run started outlives the run unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from contracts.base import JsonObject
from contracts.logs import LogFd
from contracts.payloads import EncryptedSecret, LocalPayload, PayloadError, Text, validate_payload
from services.dispatcher.drivers.base import Execution, ExitStatus, Limits, LogSink, StartFailed
from services.dispatcher.drivers.gates import POOLED_GATE_SCRIPT, Gate, GatePool, encode_spec

CHUNK_BYTES = 256 * 1024
DRAIN_IDLE_S = 2.0
GATE_SCRIPT = 'IFS= read -r _ || exit 125; exec "$@"'
GATE_NAME = "batchyard-run"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1024 * 1024


def parse_payload(payload: JsonObject) -> LocalPayload:
    """The renderer checked the payload already; the dispatcher checks again because a bad payload must
    fail the run, never the dispatcher."""
    try:
        return LocalPayload.model_validate(validate_payload("local", payload))
    except PayloadError as exc:
        raise StartFailed(f"invalid local payload: {exc.field or 'payload'}: {exc.reason}") from None


def _plain(value: Text, where: str) -> str:
    """Payloads reach the driver with their secrets opened; one still sealed cannot be used."""
    if isinstance(value, EncryptedSecret):
        raise StartFailed(f"{where} holds a secret that was not decrypted")
    return value


def base_env(run_id: str) -> dict[str, str]:
    """A small environment chosen on purpose: the dispatcher's own (database DSN, keys) never leaks."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env["BATCHYARD_RUN_ID"] = run_id
    return env


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of a process: with the pid it names one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _argv(command: list[Text] | str) -> list[str]:
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return [_plain(arg, f"command.{index}") for index, arg in enumerate(command)]


def _check_startable(argv: list[str], cwd: str | None, env: dict[str, str]) -> None:
    if cwd is not None and not Path(cwd).is_dir():
        raise StartFailed(f"working directory {cwd!r} does not exist")
    program = argv[0]
    if "/" in program:
        path = Path(cwd or ".") / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StartFailed(f"command {program!r} not found or not executable")
    elif shutil.which(program, path=env.get("PATH", DEFAULT_PATH)) is None:
        raise StartFailed(f"command {program!r} not found in PATH")


def _spawn_gated(argv: list[str], env: dict[str, str], cwd: str | None) -> Gate:
    """Fork the gate shell for one run; a plain call, since fork and exec take about a millisecond and
    asyncio's own subprocess support forks synchronously in the loop just the same."""
    return _fork_gate(["/bin/sh", "-c", GATE_SCRIPT, GATE_NAME, *argv], env, cwd)


def spawn_pooled_gate() -> Gate:
    """Fork a gate for the pool (gates.py): no run's environment yet, it arrives through the gate."""
    return _fork_gate(["/bin/sh", "-c", POOLED_GATE_SCRIPT, GATE_NAME], {}, None)


def _fork_gate(args: list[str], env: dict[str, str], cwd: str | None) -> Gate:
    gate_read, gate_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    for fd in (out_read, err_read):
        _widen_pipe(fd)
    try:
        process = subprocess.Popen(
            args,
            stdin=gate_read,
            stdout=out_write,
            stderr=err_write,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (gate_write, out_read, err_read):
            os.close(fd)
        raise StartFailed(f"could not start the process: {exc}") from None
    finally:
        for fd in (gate_read, out_write, err_write):
            os.close(fd)
    return Gate(process, gate_write, out_read, err_read, process_start_ticks(process.pid))


def close_gate(gate: int | None, release: bool) -> None:
    """Closing a gate without the newline makes the waiting shell exit 125 instead of exec'ing the
    command; a gate already closed is None."""
    if gate is None:
        return
    with contextlib.suppress(OSError):
        if release:
            os.write(gate, b"\n")
    os.close(gate)


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: a process printing fast wakes the dispatcher a sixteenth as often,
    and each read hands a whole chunk to the log. The system may refuse (pipe-max-size); then the
    default pipe still works, only with more wake-ups."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)


class LocalProcessDriver:
    name = "local"

    def __init__(self, chunk_bytes: int = CHUNK_BYTES, gate_pool: int = 0) -> None:
        """`gate_pool` gates wait forked ahead of time (gates.py); 0 forks each run's gate as it starts."""
        self.chunk_bytes = chunk_bytes
        self.host = socket.gethostname()
        self.gates = GatePool(gate_pool, spawn_pooled_gate, self._connect)

    async def close(self) -> None:
        await self.gates.close()

    async def _connect(self, gate: Gate) -> None:
        """Connect a gate's output pipes to the loop; a pooled gate comes connected, so the run that
        takes it does not wait on the loop for it."""
        loop = asyncio.get_running_loop()
        pipes: dict[LogFd, int] = {"stdout": gate.stdout, "stderr": gate.stderr}
        for fd_name, fd in pipes.items():
            reader = asyncio.StreamReader(limit=self.chunk_bytes)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_read_pipe(
                functools.partial(_same, protocol), os.fdopen(fd, "rb", buffering=0)
            )
            gate.readers[fd_name] = (reader, transport)

    async def prepare(self, run_id: str, payload: JsonObject, logs: LogSink) -> Execution:
        if "steps" in payload:
            from services.dispatcher.drivers.pipeline import prepare_pipeline

            return await prepare_pipeline(run_id, payload, logs, self.host, self.chunk_bytes)
        spec = parse_payload(payload)
        env = {**base_env(run_id), **{name: _plain(value, f"env.{name}") for name, value in spec.env.items()}}
        argv = _argv(spec.command)
        _check_startable(argv, spec.cwd, env)
        gate = self._pooled_gate(argv, env, spec.cwd) or _spawn_gated(argv, env, spec.cwd)
        process = gate.process
        handle: JsonObject = {
            "pid": process.pid,
            "pgid": process.pid,
            "host": self.host,
            "proc_start": gate.proc_start,
        }
        limits = Limits(spec.timeout_s, spec.stop_grace_s)
        execution = LocalExecution(handle, limits, process, gate.gate, on_gate_closed=self.gates.refill_soon)
        if not gate.readers:
            await self._connect(gate)
        execution.follow(gate.readers, logs, self.chunk_bytes)
        return execution

    def _pooled_gate(self, argv: list[str], env: dict[str, str], cwd: str | None) -> Gate | None:
        encoded = encode_spec(argv, env, cwd) if self.gates.size > 0 else None
        return self.gates.take(encoded) if encoded is not None else None

    async def end_orphan(self, handle: JsonObject) -> None:
        """A local process cannot be followed by another dispatcher; kill what is left of its group if
        it runs on this host (every step's, for a pipeline)."""
        steps = handle.get("steps")
        for step in steps if isinstance(steps, list) else [handle]:
            if isinstance(step, dict):
                kill_orphaned_group(step, self.host)


def kill_orphaned_group(handle: JsonObject, host: str) -> bool:
    pid = handle.get("pid")
    if handle.get("host") != host or not isinstance(pid, int):
        return False
    start = handle.get("proc_start")
    if start is None or process_start_ticks(pid) != start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(handle.get("pgid", pid)), signal.SIGKILL)
        return True
    return False


def _same(protocol: asyncio.StreamReaderProtocol) -> asyncio.StreamReaderProtocol:
    return protocol


class LocalExecution(Execution):
    def __init__(
        self,
        handle: JsonObject,
        limits: Limits,
        process: subprocess.Popen[bytes],
        gate: int,
        on_gate_closed: Callable[[], None] | None = None,
    ) -> None:
        """`on_gate_closed` is told once the gate opened or closed for good: the run no longer waits on
        anything, so the driver may fork the next pooled gate."""
        super().__init__(handle, limits)
        self.process = process
        self.pgid = process.pid
        self._gate: int | None = gate
        self._on_gate_closed = on_gate_closed
        self._pumps: list[asyncio.Task[None]] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._bytes_read = 0
        self._status: asyncio.Future[ExitStatus] | None = None

    def follow(
        self,
        readers: dict[LogFd, tuple[asyncio.StreamReader, asyncio.BaseTransport]],
        logs: LogSink,
        chunk_bytes: int,
    ) -> None:
        for fd_name, (reader, transport) in readers.items():
            self._transports.append(transport)
            self._pumps.append(asyncio.create_task(self._pump(fd_name, reader, logs, chunk_bytes)))

    async def _pump(self, fd: LogFd, reader: asyncio.StreamReader, logs: LogSink, chunk_bytes: int) -> None:
        while chunk := await reader.read(chunk_bytes):
            self._bytes_read += len(chunk)
            await logs.write(fd, chunk)

    def _close_gate(self, release: bool) -> None:
        if self._gate is None:
            return
        close_gate(self._gate, release)
        self._gate = None
        if self._on_gate_closed is not None:
            self._on_gate_closed()

    async def _release(self) -> None:
        self._close_gate(release=True)

    async def _abort(self) -> None:
        self._close_gate(release=False)
        await self._kill()
        await self._exited()

    async def _terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    async def _kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def _exited(self) -> ExitStatus:
        if self._status is None:
            self._status = asyncio.ensure_future(self._watch())
        return await asyncio.shield(self._status)

    async def _watch(self) -> ExitStatus:
        await leader_exited(self.process.pid)
        self._signal_group(signal.SIGKILL)
        returncode = self.process.wait()
        self._close_gate(release=False)
        await self._drain()
        if returncode < 0:
            return ExitStatus(signal=-returncode)
        return ExitStatus(exit_code=returncode)

    async def _drain(self) -> None:
        """Read the pipes to their end; give up only when a pipe stays open with nothing coming, which
        means a process that escaped the group holds it."""
        pending = set(self._pumps)
        while pending:
            before = self._bytes_read
            _, pending = await asyncio.wait(pending, timeout=DRAIN_IDLE_S)
            if pending and self._bytes_read == before:
                break
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for transport in self._transports:
            transport.close()
        for task in self._pumps:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def leader_exited(pid: int) -> None:
    """Wait on a pidfd: it turns readable when the leader is a zombie, before it is reaped, so the
    group can still be signalled without any risk of hitting a reused pid."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
