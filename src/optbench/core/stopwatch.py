"""Wall-clock time over the periods a stopwatch runs: training time with validation, logging and
measuring left out (pauses nest, so an instrument can pause inside a paused period)."""

from __future__ import annotations

import time


class Stopwatch:
    """Seconds accumulated while running. Before `start` it reads 0 and ignores pause and resume."""

    def __init__(self) -> None:
        self._elapsed, self._since, self._pauses, self._started = 0.0, 0.0, 0, False

    def start(self, already: float = 0.0) -> None:
        self._elapsed, self._since, self._pauses, self._started = already, time.perf_counter(), 0, True

    def pause(self) -> None:
        if not self._started:
            return
        if self._pauses == 0:
            self._elapsed += time.perf_counter() - self._since
        self._pauses += 1

    def resume(self) -> None:
        """Undo one pause; running already is left running."""
        if not self._started or self._pauses == 0:
            return
        self._pauses -= 1
        if self._pauses == 0:
            self._since = time.perf_counter()

    def seconds(self) -> float:
        running = self._started and self._pauses == 0
        return self._elapsed + (time.perf_counter() - self._since if running else 0.0)
