"""The result cache is bounded and computes a key once at a time; computation slots are bounded."""

from __future__ import annotations

import threading
import time

import pytest

from explainer.errors import BusyError
from explainer.limits import ResultCache, Slots


def test_cache_is_a_bounded_lru() -> None:
    cache: ResultCache[str] = ResultCache(2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")
    assert (
        cache.get("b") is None
        and cache.get("a") == "A"
        and cache.get("c") == "C"
        and len(cache) == 2
    )
    off: ResultCache[str] = ResultCache(0)
    off.put("a", "A")
    assert off.get("a") is None


def test_concurrent_requests_for_one_key_compute_once() -> None:
    cache: ResultCache[int] = ResultCache(4)
    calls = 0
    gate = threading.Event()

    def compute() -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return 42

    results: list[tuple[int, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert calls == 1 and sorted(results) == [(42, False)] + [(42, True)] * 4


def test_a_failed_computation_is_not_cached() -> None:
    cache: ResultCache[int] = ResultCache(4)

    def fail() -> int:
        raise ValueError("nope")

    with pytest.raises(ValueError):
        cache.get_or_compute("k", fail)
    assert cache.get_or_compute("k", lambda: 7) == (7, False)


def test_slots_bound_concurrency_and_waiting() -> None:
    slots = Slots(1, wait_s=0.2, max_waiting=1)
    with slots.hold():
        started = time.monotonic()
        with pytest.raises(BusyError, match="within"), slots.hold():
            pass
        assert time.monotonic() - started >= 0.2
        none_waiting = Slots(1, wait_s=5, max_waiting=0)
        with (
            none_waiting.hold(),
            pytest.raises(BusyError, match="already wait"),
            none_waiting.hold(),
        ):
            pass
    with slots.hold():  # released after use
        pass
