"""Bounds on the explainer's work: a result LRU with single flight, and computation slots.

- ``ResultCache``: at most ``size`` results; a key being computed is computed once, and concurrent
  requests for it wait for that result instead of starting their own (a failed computation is not
  cached: all waiters retry).
- ``Slots``: at most ``concurrency`` SHAP computations at once. A request waits up to ``wait_s`` for
  a slot; at most ``max_waiting`` requests wait, and the others (or one that waited too long) get
  ``BusyError`` (HTTP 429 with ``Retry-After``), so a burst never turns into unbounded threads
  holding memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from explainer.errors import BusyError

V = TypeVar("V")


class ResultCache(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> tuple[V, bool]:
        """``(value, hit)``: the cached value, or the one ``compute`` returns (computed once per key
        at a time)."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key], True
                waiting = self._inflight.get(key)
                if waiting is None:
                    done = self._inflight[key] = threading.Event()
                    break
            waiting.wait()
            # the computation finished (or failed): look again
        try:
            value = compute()
            self.put(key, value)
            return value, False
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            done.set()

    def __len__(self) -> int:
        return len(self._items)


class Slots:
    def __init__(self, concurrency: int, wait_s: float, max_waiting: int | None = None) -> None:
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.max_waiting = 4 * concurrency if max_waiting is None else max_waiting
        self._sem = threading.BoundedSemaphore(concurrency)
        self._waiting = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A computation slot for the ``with`` block, or ``BusyError``."""
        if not self._sem.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.max_waiting:
                    raise BusyError(
                        f"{self._waiting} explanations already wait for {self.concurrency} slots"
                    )
                self._waiting += 1
            try:
                got = self._sem.acquire(timeout=self.wait_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise BusyError(f"no free explanation slot within {self.wait_s:g} s")
        try:
            yield
        finally:
            self._sem.release()
