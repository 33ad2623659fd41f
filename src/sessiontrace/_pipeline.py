"""The queue between traced code and the store, and the one writer thread behind it.

The items are records (``_records``: finished traces, late spans, tag changes);
a sink (a SQL store, the HTTP exporter) gets them in batches. Producers pay one
``deque.append``. The writer wakes every ``flush_interval`` or as
soon as a batch is ready, and hands whole batches to the sink (one transaction per
batch). Guarantees:

- Nothing is dropped silently. When the queue is full and the store is keeping up,
  callers wait (bounded by ``max_block_seconds``) for room: backpressure, not loss.
  When the store is failing, callers are never held up; traces beyond the bound are
  dropped and counted, and a warning says how many.
- A failing sink never raises into the app. Retryable failures (a locked or full
  database) are retried with backoff while the batch is held; other failures are
  isolated item by item so one bad trace cannot sink its batch.
- ``flush()`` puts a marker in the queue and waits for the writer to reach it, so
  it covers everything submitted before it, from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["Pipeline", "RetryableExportError", "Sink"]

logger = logging.getLogger("sessiontrace")


class RetryableExportError(Exception):
    """Raised by a sink when the same batch may succeed later (locked, disk full, ...)."""


class Sink(Protocol):
    """Where the pipeline's batches go: a store, or an exporter to somewhere else."""

    def export(self, items: Sequence[Any]) -> None:
        """Write a batch of records atomically, or raise without having written any of
        it. Writing the same batch again leaves the same result (batches are retried)."""

    def after_fork(self) -> None:
        """Forget resources inherited from the parent process."""

    def close(self) -> None: ...


class _Marker:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class _Stats:
    __slots__ = ("dropped", "export_failures", "retries", "written")

    def __init__(self) -> None:
        self.written = 0
        self.retries = 0
        self.export_failures = 0
        self.dropped: dict[str, int] = {}


class Pipeline:
    def __init__(
        self,
        sink: Sink,
        *,
        max_queue_size: int,
        batch_size: int,
        flush_interval: float,
        max_block_seconds: float,
        prepare: Callable[[list[Any]], list[Any]] | None = None,
        count_error: Callable[[str], None] | None = None,
    ) -> None:
        self.sink = sink
        # Runs on the writer thread before each batch reaches the sink and returns
        # the batch to write (pricing LLM calls): work the app's threads never pay for.
        self._prepare = prepare
        # Told about the pipeline's own failures (a failing prepare step), by name.
        self._count_error = count_error
        self._max = max_queue_size
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_block = max_block_seconds
        self._init_state()

    def _init_state(self) -> None:
        self._q: deque[Any] = deque()
        self._wake = threading.Event()
        self._space = threading.Condition()
        self._space_waiters = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._healthy = True
        self._closed = False
        self._stats = _Stats()
        self._warnings: dict[str, tuple[float, int]] = {}
        self._in_flight = 0

    # -- producer side ----------------------------------------------------------------

    def submit(self, item: Any) -> None:
        q = self._q
        if len(q) < self._max:
            q.append(item)
            if self._thread is None:
                self._start()
            elif len(q) >= self._batch_size and not self._wake.is_set():
                self._wake.set()
            return
        self._submit_full(item)

    def _submit_full(self, item: Any) -> None:
        if self._thread is None:
            self._start()
        if self._healthy and self._max_block > 0:
            self._wake.set()
            deadline = time.monotonic() + self._max_block
            with self._space:
                self._space_waiters += 1
                try:
                    while len(self._q) >= self._max and self._healthy:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._space.wait(min(remaining, 0.1))
                finally:
                    self._space_waiters -= 1
            if len(self._q) < self._max:
                self._q.append(item)
                return
        self.count_dropped("queue_full", 1)

    def count_dropped(self, reason: str, n: int) -> None:
        with self._stats_lock:
            self._stats.dropped[reason] = self._stats.dropped.get(reason, 0) + n
        self._warn(f"dropped:{reason}", f"sessiontrace dropped {n} trace item(s): {reason}")

    def _warn(self, kind: str, message: str) -> None:
        """Log at most one warning of each kind per 10 s, saying how many were held back."""
        now = time.monotonic()
        last, suppressed = self._warnings.get(kind, (-1e9, 0))
        if now - last < 10.0:
            self._warnings[kind] = (last, suppressed + 1)
            return
        self._warnings[kind] = (now, 0)
        suffix = f" ({suppressed} similar messages held back)" if suppressed else ""
        logger.warning("%s%s; see sessiontrace.get_stats()", message, suffix)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="sessiontrace-writer", daemon=True)
            thread.start()
            self._thread = thread

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written; ``False`` on timeout."""
        if self._thread is None and not self._q:
            return True
        marker = _Marker()
        self._q.append(marker)
        if self._thread is None:
            self._start()
        self._wake.set()
        return marker.event.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        done = self.flush(timeout)
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout if timeout is not None else None)
        pending = sum(1 for item in self._q if not isinstance(item, _Marker))
        if pending:
            self._q.clear()
            self.count_dropped("shutdown_timeout", pending)
        self.sink.close()
        return done

    def after_fork(self) -> None:
        """In a forked child: the parent's queue is the parent's to write."""
        self._init_state()
        self.sink.after_fork()

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            dropped = dict(self._stats.dropped)
            return {
                "written": self._stats.written,
                "queued": self._in_flight
                + sum(1 for item in list(self._q) if not isinstance(item, _Marker)),
                "dropped": sum(dropped.values()),
                "dropped_by_reason": dropped,
                "export_failures": self._stats.export_failures,
                "retries": self._stats.retries,
                "store_healthy": self._healthy,
            }

    # -- writer side ------------------------------------------------------------------

    def _run(self) -> None:
        q = self._q
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            while q:
                n = min(len(q), self._batch_size)
                batch = [q.popleft() for _ in range(n)]
                if self._space_waiters:
                    with self._space:
                        self._space.notify_all()
                items = [i for i in batch if not isinstance(i, _Marker)]
                if items:
                    self._in_flight = len(items)
                    if self._prepare is not None:
                        items = self._run_prepare(items)
                    self._export(items)
                    self._in_flight = 0
                for item in batch:
                    if isinstance(item, _Marker):
                        item.event.set()
            if self._closed:
                return

    def _run_prepare(self, items: list[Any]) -> list[Any]:
        try:
            return self._prepare(items)  # type: ignore[misc]
        except Exception:  # never lose a batch to it: write the items as they are
            if self._count_error is not None:
                self._count_error("prepare")
            logger.debug("sessiontrace: preparing a batch failed", exc_info=True)
            return items

    def _export(self, items: list[Any]) -> None:
        delay = 0.05
        while True:
            try:
                self.sink.export(items)
            except RetryableExportError as exc:
                with self._stats_lock:
                    self._stats.retries += 1
                if self._healthy:
                    self._healthy = False
                    with self._space:
                        self._space.notify_all()  # waiting callers stop waiting on a sick store
                cause = type(exc.__cause__ or exc).__name__
                self._warn("retry", f"sessiontrace store unavailable, retrying: {cause}")
                if self._closed:
                    self.count_dropped("store_unavailable_at_shutdown", len(items))
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:  # isolate the bad item(s), never crash the writer
                with self._stats_lock:
                    self._stats.export_failures += 1
                if len(items) > 1:
                    for item in items:
                        self._export([item])
                    return
                self.count_dropped("export_error", 1)
                logger.debug("sessiontrace could not export an item", exc_info=True)
                return
            self._healthy = True
            with self._stats_lock:
                self._stats.written += len(items)
            return
