"""An in-memory double of the Kafka surface the loops use, shipped beside the real adapter
(``consumer.kafka``) the way httpx ships ``MockTransport``: unit tests drive the hot loop's every
branch (abort, rewind, fencing, no model, a failing model) without a broker.

What it models, because the loop's correctness rests on it:
- partitioned logs, offsets from 0, a ``read_committed`` view: records sent in a transaction become
  visible, and the group's offsets move, only when the transaction commits, atomically;
- ``abort_transaction`` drops the transaction's records and offsets;
- a consumer reads from its group's committed offset (or 0), ``seek`` moves its position;
- fencing: once a producer is fenced, each transactional call raises ``ProducerFencedError``;
- faults: ``MemoryProducer.fail(step, error)`` makes the next call of one step raise ``error``.
What it does not: rebalances, several groups over one topic at once, timestamps other than the
wall clock, non-transactional sends from the loop. The real broker tests (tests/integration,
tests/e2e) cover those. ``MemoryReader`` (a group-less reader: assign, seek, offset look-ups) and
``MemorySender`` (a plain producer) serve the commands that read chosen offsets (``replay``,
``dlq``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import OffsetAndMetadata, TopicPartition
from kafka import errors as kerrors
from kafka.structs import OffsetAndTimestamp

Step = Literal["begin", "send", "send_offsets", "commit", "abort"]


@dataclass(frozen=True)
class MemoryRecord:
    """A consumed record (``consumer.kafka.Record``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class GroupMetadata:
    group_id: str


class MemoryBroker:
    """Topics of partitioned logs and the groups' committed offsets."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[MemoryRecord]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}

    def create(self, topic: str, partitions: int = 1) -> None:
        for p in range(partitions):
            self.logs.setdefault(TopicPartition(topic, p), [])

    def partitions(self, topic: str) -> list[TopicPartition]:
        return sorted((tp for tp in self.logs if tp.topic == topic), key=lambda tp: tp.partition)

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> MemoryRecord:
        """Write one committed record (as a plain producer would); returns it with its offset."""
        if not self.partitions(topic):
            self.create(topic)
        parts = self.partitions(topic)
        if partition is None:
            partition = zlib.crc32(key) % len(parts) if key is not None else 0
        tp = parts[partition]
        log = self.logs[tp]
        rec = MemoryRecord(topic, partition, len(log), int(time.time() * 1000), key, value, headers)
        log.append(rec)
        return rec

    def records(self, topic: str) -> list[MemoryRecord]:
        """Every visible record of ``topic``, partition by partition."""
        return [r for tp in self.partitions(topic) for r in self.logs[tp]]

    def committed_offset(self, group: str, topic: str, partition: int = 0) -> int | None:
        return self.committed.get((group, TopicPartition(topic, partition)))


@dataclass
class _Txn:
    sends: list[tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]] = field(
        default_factory=list
    )
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)


class MemoryProducer:
    """A transactional producer over ``broker`` (the loop's ``KafkaProducer`` surface)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.fenced = False
        self.closed = False
        self.calls: list[Step] = []
        self._txn: _Txn | None = None
        self._faults: dict[Step, list[BaseException]] = {}

    def fail(self, step: Step, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``step`` raise ``error`` (before doing anything)."""
        self._faults.setdefault(step, []).extend([error] * times)

    def _enter(self, step: Step) -> None:
        self.calls.append(step)
        if self.fenced and step != "abort":
            raise kerrors.ProducerFencedError()
        if self._faults.get(step):
            raise self._faults[step].pop(0)

    def begin_transaction(self) -> None:
        self._enter("begin")
        if self._txn is not None:
            raise kerrors.KafkaError("a transaction is already open")
        self._txn = _Txn()

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        self._enter("send")
        self._open().sends.append((topic, value, key, tuple(headers or ())))

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group_metadata: GroupMetadata
    ) -> None:
        self._enter("send_offsets")
        txn = self._open()
        for tp, meta in offsets.items():
            txn.offsets[(group_metadata.group_id, tp)] = meta.offset

    def commit_transaction(self) -> None:
        self._enter("commit")
        txn = self._open()
        for topic, value, key, headers in txn.sends:
            self.broker.append(topic, value, key=key, headers=headers)
        self.broker.committed.update(txn.offsets)
        self._txn = None

    def abort_transaction(self) -> None:
        self._enter("abort")
        self._txn = None

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def _open(self) -> _Txn:
        if self._txn is None:
            raise kerrors.KafkaError("no transaction is open")
        return self._txn


class MemoryConsumer:
    """A group member that owns every partition of ``topics`` (the loop's ``KafkaConsumer``
    surface). Positions start at the group's committed offsets."""

    def __init__(self, broker: MemoryBroker, topics: Iterable[str], group_id: str) -> None:
        self.broker = broker
        self.group_id = group_id
        self._owned = [tp for t in topics for tp in broker.partitions(t)]
        self._position = {tp: broker.committed.get((group_id, tp), 0) for tp in self._owned}
        self._paused: set[TopicPartition] = set()
        self.polls = 0

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[MemoryRecord]]:
        """Up to ``max_records`` records from the positions; never waits."""
        self.polls += 1
        room = max_records if max_records is not None else 500
        out: dict[TopicPartition, list[MemoryRecord]] = {}
        for tp in self._owned:
            if room <= 0:
                break
            if tp in self._paused:
                continue
            batch = self.broker.logs[tp][self._position[tp] : self._position[tp] + room]
            if batch:
                out[tp] = batch
                self._position[tp] += len(batch)
                room -= len(batch)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._position[tp] = offset

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self._position[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.broker.logs[tp])

    def group_metadata(self) -> GroupMetadata:
        return GroupMetadata(self.group_id)

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> None:
        chosen: Mapping[TopicPartition, Any] = offsets or {
            tp: OffsetAndMetadata(p, "", -1) for tp, p in self._position.items()
        }
        for tp, meta in chosen.items():
            self.broker.committed[(self.group_id, tp)] = meta.offset


class MemoryReader(MemoryConsumer):
    """A group-less reader over ``broker`` (``consumer.kafka.reader``'s surface: ``assign`` +
    ``seek``, and the offset look-ups). Everything in the double is committed, so its
    ``read_committed`` view is the whole log; the log start is always 0 (no retention)."""

    def __init__(self, broker: MemoryBroker, group_id: str = "") -> None:
        super().__init__(broker, (), group_id=group_id)
        self.closed = False

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset (a reader with a ``group_id``: a redrive's cursor)."""
        return self.broker.committed.get((self.group_id, tp))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._owned = list(partitions)
        self._position = {tp: 0 for tp in self._owned}
        self._paused = set()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self.broker.partitions(topic)} or None

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.broker.logs[tp]) for tp in partitions}

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The first record at or after each timestamp (None past the last), as Kafka answers."""
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in timestamps.items():
            rec = next((r for r in self.broker.logs[tp] if r.timestamp >= ts), None)
            out[tp] = None if rec is None else OffsetAndTimestamp(rec.offset, rec.timestamp, -1)
        return out

    def close(self) -> None:
        self.closed = True


class _Delivery:
    """What ``MemorySender.send`` returns: kafka-python's future, as far as callers use it."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, fn: Callable[[Exception], object]) -> _Delivery:
        if self.error is not None:
            fn(self.error)
        return self


class MemorySender:
    """A plain (non-transactional, idempotent) producer over ``broker``: each ``send`` appends at
    once. ``fail(n, error)`` makes the next ``n`` deliveries fail (their errbacks get ``error``)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.flushes = 0
        self.closed = False
        self._failures: list[Exception] = []

    def fail(self, times: int, error: Exception) -> None:
        self._failures.extend([error] * times)

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> _Delivery:
        if self._failures:
            return _Delivery(self._failures.pop(0))
        self.broker.append(topic, value, key=key, headers=tuple(headers or ()))
        return _Delivery(None)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
