"""Live log chunks on `<prefix>.logs.<run>`: raw bytes in the body, their place in headers.

Offsets count bytes of the run's combined log (stdout and stderr interleaved in the order they were
read), so a reader resumes with one number whether it reads the live stream or the archive. The last
message of a run is empty and carries LOG_END; its offset is the log's total size.
"""

from __future__ import annotations

from typing import Literal

LOG_OFFSET = "Batchyard-Log-Offset"
LOG_FD = "Batchyard-Log-Fd"
LOG_STEP = "Batchyard-Log-Step"
LOG_END = "Batchyard-Log-End"

LogFd = Literal["stdout", "stderr"]


def log_msg_id(run_id: str, offset: int, end: bool = False) -> str:
    """Nats-Msg-Id for a chunk: a republished chunk is dropped by JetStream's duplicate window."""
    return f"{run_id}:{offset}:end" if end else f"{run_id}:{offset}"
