"""A real S3-compatible server for tests: moto in server mode, one per test session.

It keeps everything in memory, so it is killed outright at the end: there is nothing to flush.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

READY_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """Start `moto_server -H 127.0.0.1 -p PORT` and yield its endpoint URL once it answers."""
    port = _free_port()
    executable = Path(sys.executable).parent / "moto_server"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log_path}")
                time.sleep(0.05)
            yield url
        finally:
            process.kill()
            process.wait()
