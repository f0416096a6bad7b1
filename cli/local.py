"""What a running `batchyard up` tells other commands on this machine: that it runs, and where.

`up` holds an exclusive lock on `<data_dir>/up.lock` for as long as it runs, so a second `up` on the same
data cannot start two servers on one JetStream directory, and writes `<data_dir>/up.json` with the
addresses of the embedded servers it started. Local tools (`replay`) read it to find the embedded
PostgreSQL on its unix socket without the user copying a DSN. Addresses the user gave through
`BATCHYARD_*` variables are not written down: they may carry passwords, and the user has them anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cli.errors import CliError
from shared.settings import Settings

LOCK_FILE = "up.lock"
STATE_FILE = "up.json"


@dataclass(frozen=True)
class Installation:
    """The servers a running `up` started itself (None: taken from the environment instead)."""

    pid: int
    api_url: str
    nats_url: str | None = None
    nats_pid: int | None = None
    pg_dsn: str | None = None


class UpLock:
    """An advisory lock the kernel drops when its holder dies, so a crashed `up` never blocks the next."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "unknown"
        return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_up_running(data_dir: Path) -> bool:
    lock = UpLock(data_dir)
    if not lock.path.exists():
        return False
    if lock.acquire():
        lock.release()
        return False
    return True


def write_installation(data_dir: Path, installation: Installation) -> None:
    path = data_dir / STATE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(installation), file, indent=2)


def read_installation(data_dir: Path) -> Installation | None:
    try:
        return Installation(**json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remove_installation(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def use_running_installation() -> None:
    """Point this process's settings at the servers of the running `up`, unless the user named them."""
    if "BATCHYARD_PG_DSN" in os.environ:
        return
    data_dir = Settings().data_dir.resolve()
    installation = read_installation(data_dir) if is_up_running(data_dir) else None
    if installation is None or installation.pg_dsn is None:
        raise CliError(
            f"no `batchyard up` is running on data dir {data_dir}: start it (make run) "
            "or set BATCHYARD_PG_DSN to the database"
        )
    os.environ["BATCHYARD_PG_DSN"] = installation.pg_dsn
    if installation.nats_url is not None:
        os.environ.setdefault("BATCHYARD_NATS_URL", installation.nats_url)
