"""Local pipelines: steps as processes joined by OS pipes, each held at its own gate until released.

Every step is spawned at `prepare` (so the handle names every pid before `RunStarted`), in its own
session, with its gate on a separate pipe: its stdin is already the data it will read. A step whose
predecessor writes to the next step through stdout or stderr is released at `launch` with the others
and streams; a step whose predecessor writes a file is released only once that predecessor succeeded,
and its gate then opens the file as its stdin. Data handed on is copied by the dispatcher into the log
("tee") unless the step says `log: false`, in which case the two processes share one pipe and the
dispatcher never touches the bytes. See docs/decisions/0170-pipelines-of-local-steps.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from contracts.base import Event, JsonObject
from contracts.events.runs import RunStepEnded, RunStepStarted, StepOutcome
from contracts.logs import LogFd
from contracts.payloads import LocalPipelinePayload, LocalStep, PayloadError, validate_payload
from services.dispatcher.drivers.base import Execution, ExitStatus, Limits, LogSink, Outcome, StartFailed
from services.dispatcher.drivers.local import (
    DRAIN_IDLE_S,
    GATE_NAME,
    _argv,
    _check_startable,
    _widen_pipe,
    base_env,
    close_gate,
    leader_exited,
    process_start_ticks,
)

STREAM_GATE = 'IFS= read -r _ <"/proc/self/fd/$1" || exit 125; shift; exec "$@"'
FILE_GATE = 'IFS= read -r _ <"/proc/self/fd/$1" || exit 125; exec <"$2"; shift 2; exec "$@"'
StepWriter = Callable[[LogFd, bytes], Awaitable[None]]
StepListener = Callable[[Event], None]


def parse_pipeline(payload: JsonObject) -> LocalPipelinePayload:
    try:
        validate_payload("local", payload)
        return LocalPipelinePayload.model_validate(payload)
    except PayloadError as exc:
        raise StartFailed(f"invalid local payload: {exc.field or 'payload'}: {exc.reason}") from None
    except ValidationError as exc:
        raise StartFailed(f"invalid local payload: {exc.errors()[0]['msg']}") from None


def _plain(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise StartFailed(f"{where} holds a secret that was not decrypted")
    return value


def step_writer(logs: LogSink, step: str) -> StepWriter:
    """A sink that names the step in each chunk's header when the sink can (the log publisher)."""
    write = logs.write
    if "step" in inspect.signature(write).parameters:
        return functools.partial(write, step=step)  # type: ignore[call-arg]
    return write


class StepReporting:
    """An execution that reports its steps' starts and ends; the dispatcher records them as events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.on_step: StepListener | None = None

    def emit(self, event: Event) -> None:
        if self.on_step is not None:
            self.on_step(event)


@dataclass
class Step:
    index: int
    spec: LocalStep
    process: subprocess.Popen[bytes]
    gate: int | None
    file_input: bool
    started_at: datetime | None = None
    ended: asyncio.Future[ExitStatus] | None = None
    outcome: StepOutcome | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


class _Pipes:
    """File descriptors opened while spawning, closed in the dispatcher once the children hold them."""

    def __init__(self) -> None:
        self.child_side: list[int] = []

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        _widen_pipe(read)
        return read, write

    def close_child_side(self) -> None:
        for fd in self.child_side:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child_side.clear()


async def prepare_pipeline(
    run_id: str, payload: JsonObject, logs: LogSink, host: str, chunk_bytes: int
) -> PipelineExecution:
    spec = parse_pipeline(payload)
    run_env = {**base_env(run_id), **{k: _plain(v, f"env.{k}") for k, v in spec.env.items()}}
    argvs: list[list[str]] = []
    envs: list[dict[str, str]] = []
    for step in spec.steps:
        step_env = {k: _plain(v, f"steps.{step.name}.env.{k}") for k, v in step.env.items()}
        env = {**run_env, **step_env, "BATCHYARD_STEP": step.name}
        command = step.command
        argv = _argv(
            command
            if isinstance(command, str)
            else [_plain(part, f"steps.{step.name}.command") for part in command]
        )
        try:
            _check_startable(argv, spec.cwd, env)
        except StartFailed as exc:
            raise StartFailed(f"step '{step.name}': {exc.reason}") from None
        argvs.append(argv)
        envs.append(env)
    execution = PipelineExecution(run_id, Limits(spec.timeout_s, spec.stop_grace_s), host)
    await execution.spawn(spec.steps, argvs, envs, spec.cwd, logs, chunk_bytes)
    return execution


class PipelineExecution(StepReporting, Execution):
    def __init__(self, run_id: str, limits: Limits, host: str) -> None:
        Execution.__init__(self, {}, limits)
        StepReporting.__init__(self, run_id)
        self.host = host
        self.steps: list[Step] = []
        self._ending = False
        self._failed: Step | None = None
        self._bytes_read = 0
        self._transports: list[asyncio.BaseTransport] = []
        self._control: asyncio.Future[ExitStatus] | None = None
        self._released = False

    async def spawn(
        self,
        specs: list[LocalStep],
        argvs: list[list[str]],
        envs: list[dict[str, str]],
        cwd: str | None,
        logs: LogSink,
        chunk_bytes: int,
    ) -> None:
        pipes = _Pipes()
        next_stdin = os.open(os.devnull, os.O_RDONLY)
        tee_sources: list[tuple[Step, LogFd, int, int]] = []
        log_sources: list[tuple[Step, LogFd, int]] = []
        try:
            for index, spec in enumerate(specs):
                last = index == len(specs) - 1
                stdin = next_stdin
                pipes.child_side.append(stdin)
                previous = specs[index - 1] if index else None
                file_input = previous is not None and previous.output not in ("stdout", "stderr")
                out_read, out_write = pipes.pipe()
                err_read, err_write = pipes.pipe()
                pipes.child_side += [out_write, err_write]
                handed: tuple[LogFd, int] | None = None
                if not last and spec.output in ("stdout", "stderr"):
                    handed = ("stdout", out_read) if spec.output == "stdout" else ("stderr", err_read)
                gate_read, gate_write = os.pipe()
                pipes.child_side.append(gate_read)
                script = FILE_GATE if file_input else STREAM_GATE
                extra = [str(previous.output)] if file_input and previous is not None else []
                try:
                    process = _spawn(
                        ["/bin/sh", "-c", script, GATE_NAME, str(gate_read), *extra, *argvs[index]],
                        (stdin, out_write, err_write, gate_read),
                        envs[index],
                        cwd,
                    )
                except OSError as exc:
                    os.close(gate_write)
                    raise StartFailed(f"step '{spec.name}': could not start the process: {exc}") from None
                step = Step(index, spec, process, gate_write, file_input)
                self.steps.append(step)
                pipes.close_child_side()
                next_stdin = os.open(os.devnull, os.O_RDONLY)
                for fd_name, fd in (("stdout", out_read), ("stderr", err_read)):
                    if handed is not None and handed[1] == fd:
                        continue
                    log_sources.append((step, fd_name, fd))  # type: ignore[arg-type]
                if handed is not None:
                    os.close(next_stdin)
                    if spec.log:
                        next_stdin, feed = os.pipe()
                        tee_sources.append((step, handed[0], handed[1], feed))
                    else:
                        next_stdin = handed[1]
        except BaseException:
            pipes.close_child_side()
            for fd in [source[2] for source in log_sources] + [source[2] for source in tee_sources]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.close(next_stdin)
            for step in self.steps:
                self._close_gate(step, release=False)
                _signal(step.process.pid, signal.SIGKILL)
                step.process.wait()
            raise
        os.close(next_stdin)
        self.handle = self._handle()
        for step, fd_name, fd in log_sources:
            await self._follow(step, fd_name, fd, None, logs, chunk_bytes)
        for step, fd_name, fd, feed in tee_sources:
            await self._follow(step, fd_name, fd, feed, logs, chunk_bytes)

    def _handle(self) -> JsonObject:
        first = self.steps[0].process.pid
        return {
            "pid": first,
            "pgid": first,
            "host": self.host,
            "proc_start": process_start_ticks(first),
            "steps": [
                {
                    "name": step.name,
                    "pid": step.process.pid,
                    "pgid": step.process.pid,
                    "host": self.host,
                    "proc_start": process_start_ticks(step.process.pid),
                }
                for step in self.steps
            ],
        }

    async def _follow(
        self, step: Step, fd_name: LogFd, fd: int, feed: int | None, logs: LogSink, chunk_bytes: int
    ) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=chunk_bytes)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
        self._transports.append(transport)
        writer: asyncio.StreamWriter | None = None
        if feed is not None:
            feed_transport, feed_protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(feed, "wb", buffering=0)
            )
            writer = asyncio.StreamWriter(feed_transport, feed_protocol, None, loop)
        pump = self._pump(step_writer(logs, step.name), fd_name, reader, transport, writer, chunk_bytes)
        step.pumps.append(asyncio.create_task(pump))

    async def _pump(
        self,
        write_log: StepWriter,
        fd_name: LogFd,
        reader: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
        feed: asyncio.StreamWriter | None,
        chunk_bytes: int,
    ) -> None:
        """Copy one pipe to the log and, for data handed on, to the next step's stdin. When the next
        step stops reading, stop reading too, so the producer gets SIGPIPE as in a shell pipeline."""
        try:
            while chunk := await reader.read(chunk_bytes):
                self._bytes_read += len(chunk)
                await write_log(fd_name, chunk)
                if feed is not None:
                    try:
                        feed.write(chunk)
                        await feed.drain()
                    except (BrokenPipeError, ConnectionResetError):
                        transport.close()
                        return
        finally:
            if feed is not None:
                feed.close()

    def _close_gate(self, step: Step, release: bool) -> None:
        close_gate(step.gate, release)
        step.gate = None

    def _start_step(self, step: Step) -> None:
        step.started_at = datetime.now(UTC)
        self._close_gate(step, release=True)
        self.emit(
            RunStepStarted(run_id=self.run_id, step=step.name, index=step.index, started_at=step.started_at)
        )

    async def _release(self) -> None:
        self._released = True
        for step in self.steps:
            if step.file_input and step.index > 0:
                break
            self._start_step(step)
        self._control = asyncio.ensure_future(self._run())

    async def _abort(self) -> None:
        for step in self.steps:
            self._close_gate(step, release=False)
        await self._kill()
        await asyncio.gather(*(self._step_ended(step) for step in self.steps))
        await self._drain()

    async def _terminate(self) -> None:
        self._ending = True
        self._signal_all(signal.SIGTERM)

    async def _kill(self) -> None:
        self._ending = True
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        for step in self.steps:
            if step.gate is not None:
                self._close_gate(step, release=False)
            elif step.outcome is None:
                _signal(step.process.pid, sig)

    async def _exited(self) -> ExitStatus:
        if self._control is None:
            self._control = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._control)

    async def _run(self) -> ExitStatus:
        """Follow every step to its end: release file-fed steps after their predecessor succeeded, and
        at the first failure end the others; the pipeline's status is the failed step's or the last's."""
        waiting = {asyncio.ensure_future(self._step_ended(step)): step for step in self.steps}
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
            for future in done:
                step = waiting.pop(future)
                self._settle(step, future.result())
        await self._drain()
        failed = self._failed
        if failed is not None and failed.ended is not None:
            return failed.ended.result()
        last = self.steps[-1]
        return last.ended.result() if last.ended is not None else ExitStatus(exit_code=125)

    def _settle(self, step: Step, status: ExitStatus) -> None:
        now = datetime.now(UTC)
        if step.started_at is None:
            step.outcome = "skipped"
        elif self._ending:
            step.outcome = "stopped"
        elif status.exit_code == 0 or self._consumer_gone(step, status):
            step.outcome = "succeeded"
        else:
            step.outcome = "failed"
            self._failed = step
            self._ending = True
            self._signal_all(signal.SIGKILL)
        self.emit(
            RunStepEnded(
                run_id=self.run_id,
                step=step.name,
                index=step.index,
                outcome=step.outcome,
                exit_code=status.exit_code if step.started_at else None,
                signal=status.signal if step.started_at else None,
                started_at=step.started_at,
                ended_at=now,
            )
        )
        following = self.steps[step.index + 1] if step.index + 1 < len(self.steps) else None
        if following is not None and following.file_input and following.gate is not None:
            if step.outcome == "succeeded":
                self._start_step(following)
            else:
                self._close_gate(following, release=False)

    def _consumer_gone(self, step: Step, status: ExitStatus) -> bool:
        """Killed by SIGPIPE because the next step stopped reading: the consumer's choice, as in a
        shell pipeline (`yes | head -1`), not the producer's failure."""
        following = self.steps[step.index + 1] if step.index + 1 < len(self.steps) else None
        return status.signal == signal.SIGPIPE and following is not None and following.outcome is not None

    async def _step_ended(self, step: Step) -> ExitStatus:
        if step.ended is None:
            step.ended = asyncio.ensure_future(self._watch(step))
        return await asyncio.shield(step.ended)

    async def _watch(self, step: Step) -> ExitStatus:
        await leader_exited(step.process.pid)
        _signal(step.process.pid, signal.SIGKILL)
        returncode = step.process.wait()
        self._close_gate(step, release=False)
        if returncode < 0:
            return ExitStatus(signal=-returncode)
        return ExitStatus(exit_code=returncode)

    async def _drain(self) -> None:
        pumps = [pump for step in self.steps for pump in step.pumps]
        pending = set(pumps)
        while pending:
            before = self._bytes_read
            _, pending = await asyncio.wait(pending, timeout=DRAIN_IDLE_S)
            if pending and self._bytes_read == before:
                break
        for task in pending:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for transport in self._transports:
            transport.close()
        for task in pumps:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def outcome(self) -> Outcome:
        """As for a single process, with the failed step named in the reason."""
        result = await super().outcome()
        failed = self._failed
        if result.kind == "failed" and failed is not None:
            return dataclasses.replace(result, reason=f"step '{failed.name}' {result.reason}")
        return result


def _spawn(
    argv: list[str], fds: tuple[int, int, int, int], env: dict[str, str], cwd: str | None
) -> subprocess.Popen[bytes]:
    """Fork one gated step (a plain call: fork and exec take well under a millisecond, see local.py)."""
    stdin, stdout, stderr, gate = fds
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=(gate,),
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
