"""Where a command's wall time goes, for benchmarks/pipeline.py: with OPTBENCH_TIMINGS=<file> set, every
optbench command appends one JSON line to that file when it exits: its command, its wall time from process
creation, and the seconds spent in each phase. Unset (the default), nothing is measured or written.

Phases are exclusive: time inside a nested phase counts for the inner one only ("tracking" inside
"compute" is MLflow I/O, not computation). Time in no phase is "other" (data loading, building the
trainer, writing files, exit). "startup" is from process creation to the command's first `phase`.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

ENV = "OPTBENCH_TIMINGS"

_totals: dict[str, float] = {}
_stack: list[str] = []
_last = 0.0
_started = False


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _process_created() -> float:
    """The process's creation time (seconds since the epoch), from the kernel's process table."""
    import psutil

    return psutil.Process().create_time()


def _charge(now: float) -> None:
    global _last
    key = _stack[-1] if _stack else "other"
    _totals[key] = _totals.get(key, 0.0) + now - _last
    _last = now


def _start() -> None:
    global _started, _last
    _started = True
    _last = time.time()
    _totals["startup"] = _last - _process_created()
    atexit.register(_write)


def begin() -> None:
    """The command's work begins: the time since the process was created was its start-up (interpreter,
    imports, config). Later calls do nothing."""
    if enabled() and not _started:
        _start()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside as `name` (compute, tracking, tuning, reporting)."""
    if not enabled():
        yield
        return
    begin()
    _charge(time.time())
    _stack.append(name)
    try:
        yield
    finally:
        _charge(time.time())
        _stack.pop()


def timed(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`function`, its calls counted as phase `name` (for a logger's methods, say)."""
    if not enabled():
        return function

    def call(*args: Any, **kwargs: Any) -> Any:
        with phase(name):
            return function(*args, **kwargs)

    return call


@contextmanager
def timed_context(manager: AbstractContextManager[Any], name: str) -> Iterator[Any]:
    """Enter and exit `manager` as phase `name` (the body inside is not counted as `name`)."""
    with phase(name):
        value = manager.__enter__()
    try:
        yield value
    except BaseException:
        with phase(name):
            if not manager.__exit__(*sys.exc_info()):
                raise
    else:
        with phase(name):
            manager.__exit__(None, None, None)


def _write() -> None:
    _charge(time.time())
    record = {
        "command": os.path.basename(sys.argv[0]),
        "argv": sys.argv[1:],
        "pid": os.getpid(),
        "wall": time.time() - _process_created(),
        "phases": _totals,
    }
    with open(os.environ[ENV], "a", encoding="utf-8") as f:  # one short line: appends do not interleave
        f.write(json.dumps(record) + "\n")
