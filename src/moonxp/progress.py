"""A one-line progress bar on a terminal, for runs long enough to need one."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30
DELAY_S = 1.0  # runs shorter than this never show a bar


class Progress:
    """Callable progress(done, total): redraws a bar on `stream` if it is a terminal."""

    def __init__(self, stream: TextIO, total: int):
        self.stream, self.total = stream, total
        self.started = time.perf_counter()
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False

    def __call__(self, done: int, total: int | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        if not self.enabled or elapsed < DELAY_S:
            return
        total = total or self.total
        filled = WIDTH * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} iterations, {elapsed:.1f} s")
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        """Erase the bar, if one is drawn (before other output on the terminal); the next call redraws it."""
        if self.drawn:
            self.stream.write("\r" + " " * (WIDTH + 40) + "\r")
            self.stream.flush()
            self.drawn = False
