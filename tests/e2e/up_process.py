"""Drive `batchyard up` as a user would: a real subprocess, its terminal output, its signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

READY_LINE = "batchyard is ready"


def batchyard_command() -> list[str]:
    script = Path(sys.executable).parent / "batchyard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def clean_environment(**overrides: str) -> dict[str, str]:
    """The test's environment without any BATCHYARD_* a developer may have exported."""
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("BATCHYARD_")}
    env.update(NO_COLOR="1", **overrides)
    return env


class UpProcess:
    def __init__(self, data_dir: Path, api_port: int, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.api_port = api_port
        self.output_path = data_dir.parent / f"up-{data_dir.name}-{time.monotonic_ns()}.out"
        environment = clean_environment(BATCHYARD_DATA_DIR=str(data_dir), BATCHYARD_API_PORT=str(api_port))
        environment.update(env or {})
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [*batchyard_command(), "up", "--grace", "5"],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0, *, times: int = 1) -> None:
        """Until `text` has appeared `times` times in the output."""
        deadline = time.monotonic() + timeout
        while self.output.count(text) < times:
            if self.process.poll() is not None:
                raise AssertionError(f"up exited ({self.process.returncode}) before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        self.wait_for(READY_LINE, timeout)

    def descendants(self) -> list[psutil.Process]:
        children: list[psutil.Process] = psutil.Process(self.process.pid).children(recursive=True)
        return children

    def service_processes(self) -> dict[str, psutil.Process]:
        """The running services by name, recognised by their `python -m services.<name>.main` command."""
        found = {}
        for child in self.descendants():
            with contextlib.suppress(psutil.Error):
                command = child.cmdline()
                if "-m" in command and command[command.index("-m") + 1].startswith("services."):
                    found[command[command.index("-m") + 1].split(".")[1]] = child
        return found

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 20.0) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"up did not stop within {timeout}s after {sig.name}:\n{self.output}"
            ) from None

    def kill(self) -> None:
        for process in [*self.descendants(), psutil.Process(self.process.pid)]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        self.process.wait()


@contextlib.contextmanager
def running_up(data_dir: Path, api_port: int, *, env: dict[str, str] | None = None) -> Iterator[UpProcess]:
    up = UpProcess(data_dir, api_port, env=env)
    try:
        yield up
    finally:
        if up.process.poll() is None:
            up.kill()


@contextlib.contextmanager
def no_leftovers(data_dir: Path) -> Iterator[None]:
    """Whatever happens in the test, no server working in `data_dir` outlives it."""
    try:
        yield
    finally:
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if str(data_dir) in " ".join(process.cmdline()):
                    process.kill()


@contextlib.contextmanager
def occupied(*ports: int) -> Iterator[None]:
    """Something listening on each port: the machine's own server if it runs, else a stand-in socket."""
    sockets = []
    for port in ports:
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen()
            sockets.append(listener)
        except OSError:
            listener.close()
    try:
        yield
    finally:
        for listener in sockets:
            listener.close()


def wait_gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """The processes still alive after `timeout` (zombies count as gone)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        status: str = process.status()
    except psutil.Error:
        return False
    return status != "zombie"
