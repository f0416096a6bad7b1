"""What `up` writes: prefixed lines on the terminal, plain lines in one log file per source."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from cli.console import Console


def test_each_line_is_prefixed_on_the_terminal_and_plain_in_the_sources_log_file(tmp_path: Path) -> None:
    terminal = io.StringIO()
    console = Console(tmp_path / "logs", terminal)
    console.raw("renderer", b"rendered run 1")
    console.line("batchyard", "started api (pid 7)")
    console.announce("batchyard is ready")
    console.close()
    assert terminal.getvalue().splitlines() == [
        "renderer    | rendered run 1",
        "batchyard   | started api (pid 7)",
        "batchyard is ready",
    ]
    assert (tmp_path / "logs" / "renderer.log").read_text() == "rendered run 1\n"
    assert (tmp_path / "logs" / "batchyard.log").read_text() == "started api (pid 7)\nbatchyard is ready\n"


def test_logging_to_files_goes_on_after_the_terminal_is_gone(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed_terminal = os.fdopen(write_end, "w")
    console = Console(tmp_path / "logs", closed_terminal)
    console.raw("dispatcher", b"first")
    console.raw("dispatcher", b"second")
    console.close()
    with contextlib.suppress(BrokenPipeError):
        closed_terminal.close()
    assert (tmp_path / "logs" / "dispatcher.log").read_text() == "first\nsecond\n"
