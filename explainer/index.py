"""Find an allocation by decision id: a bounded in-memory index of the ``allocations`` topic.

The topic is keyed by complaint id, so a decision id alone says nothing about where its record is.
Each explainer process runs one ``AllocationIndexer`` thread that reads the topic
(``read_committed``: aborted allocations are never indexed; no consumer group: every replica indexes
every partition) and keeps ``decision_id → (partition, offset, timestamp)``. The record itself is
read again on demand, so an entry costs ~250 bytes, not the record.

Bounds: entries older than ``lookback_s`` (by Kafka record timestamp) are dropped, and at most
``max_entries`` are kept (oldest first out). At start the indexer seeks each partition to the first
offset inside the lookback window, and ``caught_up`` turns true once it has read up to the end
offsets seen at start (readiness). A decision outside the window is 404 by id but can still be
explained by POSTing its allocation record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumer.kafka import FETCH_MAX_BYTES, map_kafka_errors, reader
from consumer.settings import CommonSettings

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_S = 30 * 86_400
DEFAULT_MAX_ENTRIES = 500_000
_REFRESH_PARTITIONS_S = 30.0


class DecisionIndex:
    """Thread-safe bounded map from decision id to the (partition, offset) of its allocation
    record."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, lookback_s: float = DEFAULT_LOOKBACK_S
    ) -> None:
        self.max_entries = max_entries
        self.lookback_s = lookback_s
        self._entries: OrderedDict[str, tuple[int, int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, decision_id: str, partition: int, offset: int, timestamp_s: float) -> None:
        with self._lock:
            self._entries[decision_id] = (partition, offset, timestamp_s)
            self._entries.move_to_end(decision_id)  # a redelivered decision: the latest record wins
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, decision_id: str, now: float | None = None) -> tuple[int, int] | None:
        with self._lock:
            self._expire(time.time() if now is None else now)
            hit = self._entries.get(decision_id)
        return None if hit is None else (hit[0], hit[1])

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        cutoff = now - self.lookback_s
        # entries arrive roughly in time order, so the expired ones sit at the front
        while self._entries:
            key, (_, _, ts) = next(iter(self._entries.items()))
            if ts >= cutoff:
                break
            del self._entries[key]


class AllocationIndexer:
    """Fills a ``DecisionIndex`` from the allocations topic, in a daemon thread or step by step
    (``poll_once``)."""

    def __init__(
        self, settings: CommonSettings, topic: str, index: DecisionIndex, poll_ms: int = 500
    ) -> None:
        self.topic = topic
        self.index = index
        self._poll_ms = poll_ms
        self._settings = settings
        self._consumer: KafkaConsumer | None = None
        self._targets: dict[
            TopicPartition, int
        ] = {}  # end offsets seen when a partition was assigned
        self._assigned_at = 0.0
        self.caught_up = False
        self.indexed = 0
        self.skipped = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allocation-indexer", daemon=True)

    def start(self) -> AllocationIndexer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.close()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self.error = None
            except (
                Exception
            ) as exc:  # keep indexing: the broker may come back; /readyz reports the error
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("allocation indexer failed; retrying", extra={"error": self.error})
                self.close()
                self._stop.wait(2.0)

    def poll_once(self) -> int:
        """Assign new partitions when due, poll once and index what came; returns records
        indexed."""
        with map_kafka_errors("allocation indexer"):
            c = self._client()
            if time.monotonic() - self._assigned_at > _REFRESH_PARTITIONS_S:
                self._assign(c)
            if (
                not self._targets
            ):  # the topic does not exist yet: nothing was decided, nothing to index
                self.caught_up = True
                self._stop.wait(self._poll_ms / 1000)
                return 0
            n = 0
            for batch in c.poll(timeout_ms=self._poll_ms, max_records=1000).values():
                for rec in batch:
                    n += self._index(rec)
            if not self.caught_up:
                self.caught_up = all(c.position(tp) >= end for tp, end in self._targets.items())
            return n

    def _client(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = reader(self._settings, fetch_max_bytes=FETCH_MAX_BYTES)
            self._targets = {}
            self._assigned_at = 0.0
        return self._consumer

    def _assign(self, c: KafkaConsumer) -> None:
        self._assigned_at = time.monotonic()
        parts = c.partitions_for_topic(self.topic) or set()
        new = [
            tp
            for tp in (TopicPartition(self.topic, p) for p in sorted(parts))
            if tp not in self._targets
        ]
        if not new:
            return
        c.assign([*self._targets, *new])
        since_ms = int((time.time() - self.index.lookback_s) * 1000)
        starts = c.offsets_for_times({tp: since_ms for tp in new})
        ends = c.end_offsets(new)
        for tp in new:
            found = starts.get(tp)
            c.seek(tp, found.offset if found is not None else ends[tp])
            self._targets[tp] = ends[tp]
        log.info(
            "indexing allocations",
            extra={"topic": self.topic, "partitions": [tp.partition for tp in new]},
        )

    def _index(self, rec: Any) -> int:
        try:
            decision_id = json.loads(rec.value)["decision_id"]
        except (TypeError, ValueError, KeyError):
            self.skipped += 1  # not an allocation: nothing to explain there
            return 0
        if not isinstance(decision_id, str):
            self.skipped += 1
            return 0
        self.index.put(decision_id, rec.partition, rec.offset, rec.timestamp / 1000)
        self.indexed += 1
        return 1

    def catch_up(self, timeout_s: float, until: Callable[[], bool] | None = None) -> bool:
        """Poll in this thread until caught up with the end offsets seen at start, or until
        ``until()`` is true (the one-shot CLI stops as soon as its decision is indexed); returns
        whether it caught up."""
        deadline = time.monotonic() + timeout_s
        while not self.caught_up and time.monotonic() < deadline:
            self.poll_once()
            if until is not None and until():
                break
        return self.caught_up
