"""Limits that keep the web service's memory and latency bounded under load: a memory budget that
decoded uploads share, and a queue of bounded length for slow jobs on a thread of their own."""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None
_TRIM_AFTER = 64 * 2**20  # bytes held by one image after which free memory is handed back


class Busy(Exception):
    """Too much asked at once: the request should come back later."""


class QueueFull(Busy):
    """A :class:`JobQueue` already holds as many jobs as it takes."""


class MemoryFull(Busy):
    """A :class:`MemoryBudget` already has a whole budget's worth of requests waiting."""


class MemoryBudget:
    """Bytes that requests may hold at once for decoded images. A request waits for its share;
    one that would wait behind a whole budget's worth of others is refused (MemoryFull)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiting = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int, *, timeout: float) -> Iterator[Callable[[int], None]]:
        """Hold ``nbytes`` until the block ends, after waiting up to ``timeout`` s for them
        (TimeoutError past it); the block gets a function that shrinks the share it holds."""
        if not 0 <= nbytes <= self.total:
            raise ValueError(f"{nbytes} bytes asked of a {self.total}-byte budget")
        deadline = time.monotonic() + timeout
        with self._changed:
            if self._free < nbytes and self._waiting + nbytes > self.total:
                raise MemoryFull("too many large images are being decoded: try again later")
            self._waiting += nbytes
            try:
                while self._free < nbytes:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._changed.wait(left):
                        raise TimeoutError("no memory to decode the image within the time limit")
            finally:
                self._waiting -= nbytes
            self._free -= nbytes
        held = nbytes

        def shrink(to: int) -> None:
            nonlocal held
            self._give(held - min(held, to))
            held = min(held, to)

        try:
            yield shrink
        finally:
            self._give(held)
            if nbytes >= _TRIM_AFTER:
                release_free_memory()

    def _give(self, nbytes: int) -> None:
        with self._changed:
            self._free += nbytes
            self._changed.notify_all()


class JobQueue:
    """Jobs run one at a time on a thread of their own, at a lower CPU priority (Linux), with at
    most ``waiting`` more queued behind the running one; ``submit`` raises QueueFull beyond."""

    def __init__(self, waiting: int, name: str) -> None:
        self.name = name
        self._slots = threading.BoundedSemaphore(waiting + 1)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``job(*args)`` queued; its slot frees when it ends or is cancelled before it starts."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull(f"too many {self.name} jobs asked for at once: try again later")
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=self.name, initializer=_lower_priority
                )
            future = self._executor.submit(job, *args)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        """Cancel the queued jobs (the running one ends on its own); ``submit`` starts anew."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def release_free_memory() -> None:
    """Hand memory that is free but kept by glibc's allocator back to the system."""
    if hasattr(_LIBC, "malloc_trim"):  # glibc
        _LIBC.malloc_trim(0)


def _lower_priority() -> None:
    if sys.platform == "linux":  # per-thread there; threads it starts (OpenMP) inherit it
        thread = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + 10)
        )
