"""Where `up` writes: the terminal, one line per record prefixed by its source, and a log file per source.

Services log to stderr in the format of `shared.logging`; `up` adds the prefix so the four interleaved
streams stay readable, and keeps the unprefixed lines in `<data_dir>/logs/<source>.log`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO, TextIO

PREFIX_WIDTH = 11
COLOURS = ("36", "33", "35", "32", "34", "31")
SUPERVISOR = "batchyard"


class Console:
    def __init__(self, log_dir: Path, stream: TextIO | None = None) -> None:
        self.log_dir = log_dir
        self.stream: TextIO | None = stream or sys.stdout
        self.colour = self.stream.isatty() and "NO_COLOR" not in os.environ
        self._files: dict[str, BinaryIO] = {}
        self._colours: dict[str, str] = {}

    def line(self, source: str, text: str) -> None:
        self.raw(source, text.encode())

    def raw(self, source: str, line: bytes) -> None:
        """One line of output from `source` (without its newline)."""
        self._record(source, line)
        prefix = f"{source:<{PREFIX_WIDTH}} |"
        if self.colour:
            prefix = f"\033[{self._colour(source)}m{prefix}\033[0m"
        self._show(f"{prefix} {line.decode(errors='replace')}\n")

    def announce(self, text: str) -> None:
        """A line that matters more than the rest (ready, stopped): unprefixed, so it stands out."""
        self._record(SUPERVISOR, text.encode())
        self._show(f"{text}\n")

    def open(self, source: str) -> None:
        """Create the source's log file now, so it is there to follow before the source says anything."""
        self._file(source)

    def close(self) -> None:
        for log_file in self._files.values():
            log_file.close()
        self._files.clear()

    def _record(self, source: str, line: bytes) -> None:
        log_file = self._file(source)
        log_file.write(line + b"\n")
        log_file.flush()

    def _show(self, text: str) -> None:
        """Write to the terminal while there is one; a closed terminal must not stop the log files."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            self.stream = None

    def _file(self, source: str) -> BinaryIO:
        if source not in self._files:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._files[source] = (self.log_dir / f"{source}.log").open("ab")
        return self._files[source]

    def _colour(self, source: str) -> str:
        return self._colours.setdefault(source, COLOURS[len(self._colours) % len(COLOURS)])
