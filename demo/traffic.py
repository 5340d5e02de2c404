"""The demo's traffic: complaints sent at the demo rate, and what comes back, read as the bank's
systems would (``read_committed``): the case system answers each allocation with the humans' real
labels as feedback, the on-call's view of the DLQ keeps each dead letter's reason.

End-to-end latency is measured here, not scraped: from the moment the demo hands a complaint to its
producer to the moment the case system's reader receives the committed allocation, per phase.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from demo.labels import feedback

Show = Callable[[str], None]


def quantile(samples: Sequence[float], q: float) -> float | None:
    """The exact ``q`` quantile of ``samples`` (nearest rank: a value that was measured)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Traffic:
    """Everything sent and received, shared with the reader thread (plain dicts and lists: each
    update is one operation under the GIL)."""

    env: dict[str, str]
    rate: float
    phase: str = ""  # the phase now running: complaints sent now are counted in it
    allocations: list[dict[str, Any]] = field(default_factory=list)
    allocated: set[str] = field(default_factory=set)
    dead: dict[str, str] = field(default_factory=dict)  # record key -> reason of its dead letter
    origin: dict[str, str] = field(default_factory=dict)  # complaint id -> phase it was sent in
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _sent_at: dict[str, float] = field(default_factory=dict)

    # ---- sending
    def stream(
        self,
        docs: Sequence[dict[str, Any]],
        show: Show,
        *,
        dead_ok: bool = False,
        timeout: float = 300,
        stop: threading.Event | None = None,
    ) -> list[str]:
        """Send ``docs`` at the demo rate (until ``stop`` is set) and wait (at most ``timeout`` s)
        until each one sent has its allocation (or, with ``dead_ok``, a dead letter); returns the
        ids sent."""
        producer = self._producer()
        start, ids = time.monotonic(), []
        for i, doc in enumerate(docs):
            if stop is not None and stop.is_set():
                break
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cid = doc["complaint_id"]
            self.origin[cid] = self.phase
            self._sent_at[cid] = time.monotonic()
            producer.send(
                self._topic("COMPLAINTS"), key=cid.encode(), value=json.dumps(doc).encode()
            )
            ids.append(cid)
            if i % max(1, int(self.rate * 2)) == 0:
                show(f"{self.phase}: sent {i}/{len(docs)}")
        producer.flush()
        producer.close()
        self.wait(ids, show, dead_ok=dead_ok, timeout=timeout)
        return ids

    def send_raw(self, key: str, value: bytes) -> None:
        """One record as a broken producer would send it (the consumer must dead-letter it)."""
        producer = self._producer()
        producer.send(self._topic("COMPLAINTS"), key=key.encode(), value=value)
        producer.flush()
        producer.close()

    def wait(
        self, ids: Sequence[str], show: Show, *, dead_ok: bool = False, timeout: float = 300
    ) -> int:
        """Wait until every one of ``ids`` is allocated (or dead-lettered, with ``dead_ok``), at
        most ``timeout`` seconds; returns how many are still missing."""
        deadline = time.monotonic() + timeout
        while True:
            left = sum(
                1 for i in ids if i not in self.allocated and not (dead_ok and i in self.dead)
            )
            if not left or time.monotonic() > deadline:
                return left
            show(f"{self.phase}: waiting for {left} allocations")
            time.sleep(1)

    def forget(self, ids: Sequence[str]) -> None:
        """No latency sample for ``ids`` (redriven complaints: their wait includes the fix)."""
        for cid in ids:
            self._sent_at.pop(cid, None)

    # ---- figures
    def quantiles(self, phase: str | None = None) -> tuple[float | None, float | None, int]:
        """(p50, p99, samples) of the end-to-end latency of ``phase``'s complaints (None: all)."""
        samples = (
            [s for v in list(self.latency.values()) for s in v]
            if phase is None
            else list(self.latency.get(phase, ()))
        )
        return quantile(samples, 0.5), quantile(samples, 0.99), len(samples)

    def current(self) -> tuple[float | None, float | None, int]:
        return self.quantiles(self.phase)

    def counts(self, phase: str) -> dict[str, int]:
        """Complaints sent in ``phase``, and how many of them are allocated and dead-lettered."""
        ids = [c for c, p in list(self.origin.items()) if p == phase]
        return {
            "sent": len(ids),
            "allocated": sum(1 for c in ids if c in self.allocated),
            "dead": sum(1 for c in ids if c in self.dead),
        }

    # ---- receiving
    def readers(self, stop: threading.Event) -> threading.Thread:
        """The case system (allocations, answered with feedback) and the DLQ watcher, one thread."""
        thread = threading.Thread(target=self._read, args=(stop,), name="demo-readers", daemon=True)
        thread.start()
        return thread

    def _read(self, stop: threading.Event) -> None:
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        allocations, dlq = self._topic("ALLOCATIONS"), self._topic("DLQ")
        reader = KafkaConsumer(
            allocations,
            dlq,
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            group_id=None,
        )
        writer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        try:
            while not stop.is_set():
                for records in reader.poll(timeout_ms=200).values():
                    now = time.monotonic()
                    for r in records:
                        if r.topic == dlq:
                            self._dead_letter(r)
                            continue
                        allocation = json.loads(r.value)
                        self._allocated(allocation, now)
                        fb = feedback(allocation)
                        if fb is not None:
                            writer.send(
                                self._topic("FEEDBACK"), key=r.key, value=json.dumps(fb).encode()
                            )
        finally:
            writer.close()
            reader.close()

    def _allocated(self, allocation: dict[str, Any], now: float) -> None:
        cid = allocation["complaint_id"]
        sent = self._sent_at.pop(cid, None)
        if sent is not None:
            self.latency[self.origin.get(cid, "")].append(now - sent)
        self.allocations.append(allocation)
        self.allocated.add(cid)

    def _dead_letter(self, r: Any) -> None:
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in r.headers or ()}
        key = (r.key or b"").decode("utf-8", "replace")
        self.dead[key] = headers.get("dlq.error.code", "unknown")

    def _producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=10)

    def _topic(self, name: str) -> str:
        return self.env[f"ALLOCATOR_TOPIC_{name}"]
