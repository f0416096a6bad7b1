"""Runs the services as child processes and keeps them running until told to stop.

Each child gets its own session, so a Ctrl-C in the terminal reaches only `up`, which then stops the
services in order (SIGTERM, a grace period, SIGKILL) instead of all of them racing their own shutdown.
On Linux each child also asks the kernel for SIGTERM should `up` itself die, so none is left orphaned.
A child that exits while `up` is not stopping is restarted after a delay that doubles up to a ceiling and
resets once the child has stayed up for a while, so a crash loop neither spins nor gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from cli.console import SUPERVISOR, Console

OUTPUT_DRAIN_S = 1.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 30.0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]


def _exit_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def describe_exit(code: int | None) -> str:
    if code is None:
        return "could not be started"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class ServiceProcess:
    def __init__(
        self, spec: ServiceSpec, console: Console, stopping: asyncio.Event, policy: RestartPolicy
    ) -> None:
        self.spec = spec
        self.policy = policy
        self.console = console
        self.stopping = stopping
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def run(self) -> None:
        """Start the service and start it again whenever it dies, until `stopping` is set."""
        loop = asyncio.get_running_loop()
        delay = self.policy.first_delay_s
        while not self.stopping.is_set():
            started = loop.time()
            code = await self._run_once()
            if self.stopping.is_set():
                break
            lived = loop.time() - started
            if lived >= self.policy.stable_after_s:
                delay = self.policy.first_delay_s
            self.restarts += 1
            self._say(
                f"{self.spec.name} {describe_exit(code)} after {lived:.1f}s, unexpectedly; "
                f"restart {self.restarts} in {delay:g}s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, self.policy.max_delay_s)

    async def _run_once(self) -> int | None:
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env=self.spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_exit_with_parent(),
            )
        except OSError as exc:
            self._say(f"cannot start {self.spec.name}: {exc}")
            return None
        process = self.process
        self.console.open(self.spec.name)
        self._say(f"started {self.spec.name} (pid {process.pid})")
        if self.stopping.is_set():
            self.signal(signal.SIGTERM)
        assert process.stdout is not None
        pump = asyncio.create_task(self._pump(process.stdout))
        code = await process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), OUTPUT_DRAIN_S)
        pump.cancel()
        return code

    async def _pump(self, output: asyncio.StreamReader) -> None:
        """Copy the child's output line by line; chunks, not readline, so no line is too long."""
        pending = b""
        while chunk := await output.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self.console.raw(self.spec.name, line)
        if pending:
            self.console.raw(self.spec.name, pending)

    def signal(self, sig: signal.Signals) -> None:
        """Signal the service; SIGKILL takes its whole process group, so nothing it started survives."""
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)

    def _say(self, text: str) -> None:
        self.console.line(SUPERVISOR, text)


class Supervisor:
    def __init__(
        self, specs: list[ServiceSpec], console: Console, policy: RestartPolicy | None = None
    ) -> None:
        self.stopping = asyncio.Event()
        self.console = console
        policy = policy or RestartPolicy()
        self.services = [ServiceProcess(spec, console, self.stopping, policy) for spec in specs]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(service.run(), name=service.spec.name) for service in self.services
        ]

    def all_running(self) -> bool:
        return all(service.running for service in self.services)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM to every service, SIGKILL to those still running after `grace_s`."""
        self.stopping.set()
        for service in self.services:
            service.signal(signal.SIGTERM)
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=grace_s)
        for service in self.services:
            if service.running:
                self.console.line(
                    SUPERVISOR, f"{service.spec.name} did not stop within {grace_s:g}s; killing it"
                )
        self.kill()
        if late:
            await asyncio.wait(late)

    def kill(self) -> None:
        for service in self.services:
            service.signal(signal.SIGKILL)
