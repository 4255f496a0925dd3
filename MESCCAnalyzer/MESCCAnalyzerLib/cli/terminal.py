"""Terminal progress for the command line: one line per stage with its time."""

from __future__ import annotations

import sys
import time


class Terminal:
    """Prints stage progress to stderr (results go to stdout); silent with ``quiet``."""

    def __init__(self, *, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._stage = None
        self._t0 = None
        self._last_len = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def stage(self, name: str) -> None:
        """Start a named stage (ends the previous one, printing its time)."""
        self.finish()
        self._stage = name
        self._t0 = time.perf_counter()
        self.progress(0.0, "")

    def progress(self, fraction: float, message: str = "") -> None:
        """A ``progress(fraction, message)`` callback for the current stage."""
        if self.quiet or self._stage is None or not self._tty:
            return
        width = 24
        filled = int(round(width * min(max(fraction, 0.0), 1.0)))
        line = f"\r{self._stage:<16} [{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}% {message}"[
            :110
        ]
        pad = max(self._last_len - len(line), 0)
        self.stream.write(line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)

    def finish(self) -> None:
        """End the current stage, printing ``name ... done in T s``."""
        if self._stage is None:
            return
        elapsed = time.perf_counter() - self._t0
        if not self.quiet:
            prefix = "\r" if self._tty else ""
            line = f"{prefix}{self._stage:<16} done in {elapsed:6.2f} s"
            pad = max(self._last_len - len(line), 0) if self._tty else 0
            self.stream.write(line + " " * pad + "\n")
            self.stream.flush()
        self._stage = None
        self._last_len = 0

    def abort(self) -> None:
        """Drop the current stage without reporting it as done (the command failed)."""
        if self._stage is not None and self._tty and not self.quiet:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
        self._stage = None
        self._last_len = 0

    def cancel(self) -> bool:
        """The command line is cancelled with Ctrl-C (KeyboardInterrupt), never by polling."""
        return False
