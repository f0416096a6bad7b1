"""The supervisor against real child processes: restarts with growing delays, SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cli.console import Console
from cli.supervisor import RestartPolicy, ServiceSpec, Supervisor

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('serving', flush=True); "
    "time.sleep(60)"
)
STOPS_ON_SIGTERM = "import time; print('serving', flush=True); time.sleep(60)"


def python(name: str, code: str) -> ServiceSpec:
    return ServiceSpec(name, [sys.executable, "-c", code], dict(os.environ))


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    terminal = io.StringIO()
    supervisor = Supervisor(
        [python("stubborn", IGNORES_SIGTERM), python("polite", STOPS_ON_SIGTERM)], Console(tmp_path, terminal)
    )
    supervisor.start()
    await until(lambda: terminal.getvalue().count("| serving") == 2)
    stubborn, polite = supervisor.services
    loop = asyncio.get_running_loop()
    started = loop.time()
    await supervisor.stop(grace_s=0.5)
    assert 0.5 <= loop.time() - started < 3
    assert polite.process is not None and polite.process.returncode == -signal.SIGTERM
    assert stubborn.process is not None and stubborn.process.returncode == -signal.SIGKILL
    assert "stubborn did not stop within 0.5s; killing it" in terminal.getvalue()
    assert "polite did not stop" not in terminal.getvalue()


async def test_a_service_that_keeps_dying_is_restarted_with_doubling_delays(tmp_path: Path) -> None:
    terminal = io.StringIO()
    policy = RestartPolicy(first_delay_s=0.1, max_delay_s=0.4, stable_after_s=60)
    supervisor = Supervisor([python("crashy", "raise SystemExit(3)")], Console(tmp_path, terminal), policy)
    supervisor.start()
    await until(lambda: "restart 4 in" in terminal.getvalue())
    await supervisor.stop(grace_s=1)
    announced = [line for line in terminal.getvalue().splitlines() if "unexpectedly" in line]
    assert [line.split("; ")[1] for line in announced[:4]] == [
        "restart 1 in 0.1s",
        "restart 2 in 0.2s",
        "restart 3 in 0.4s",
        "restart 4 in 0.4s",
    ]
    assert all("crashy exit code 3 after" in line for line in announced)
    assert (tmp_path / "batchyard.log").read_text().count("started crashy") >= 4


async def test_a_stopping_supervisor_restarts_nothing(tmp_path: Path) -> None:
    terminal = io.StringIO()
    supervisor = Supervisor([python("short", STOPS_ON_SIGTERM)], Console(tmp_path, terminal))
    supervisor.start()
    await until(lambda: "| serving" in terminal.getvalue())
    await supervisor.stop(grace_s=5)
    await asyncio.sleep(0.2)
    assert terminal.getvalue().count("started short") == 1
    assert "unexpectedly" not in terminal.getvalue()
