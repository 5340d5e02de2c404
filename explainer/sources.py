"""Read single Kafka records by coordinates: the complaint text a decision scored, or an indexed
allocation.

A ``KafkaRecords`` reader has no consumer group: it assigns the one partition, seeks and reads one
record (``read_committed``, so an aborted allocation is never returned). Outcomes:
- offset below the partition's log start (deleted by retention), or the record at the offset is gone
  (compaction, an aborted transaction): ``InputGoneError`` (410);
- topic or partition unknown: ``InputGoneError`` too (the topic was deleted);
- offset at or past the end: ``DecisionNotFoundError`` (404: those coordinates never held a record);
- broker unreachable or silent within the timeout: ``BrokerError`` (503).
``MemoryRecords`` is the in-memory double with the same contract, for unit tests.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition

from consumer.contracts.messages import Complaint, Source
from consumer.decode import decode_complaint
from consumer.errors import BrokerError
from consumer.kafka import map_kafka_errors, reader
from consumer.settings import CommonSettings
from explainer.errors import DecisionNotFoundError, InputGoneError

# The record was accepted by the consumer once; read it back whatever today's size limits say.
_ANY_BYTES = 64 * 1024 * 1024
_ANY_CHARS = 10_000_000


class RecordSource(Protocol):
    def read(self, topic: str, partition: int, offset: int) -> bytes | None:
        """The value of the record at exactly these coordinates (errors as the module docstring
        says)."""
        ...


def complaint_at(records: RecordSource, source: Source) -> Complaint:
    """The complaint a decision scored, read back from its source coordinates."""
    value = records.read(source.topic, source.partition, source.offset)
    return decode_complaint(value, _ANY_BYTES, _ANY_CHARS)


class KafkaRecords:
    """Thread-safe single-record reads over one reused, group-less consumer."""

    def __init__(self, settings: CommonSettings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None

    def _client(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = reader(
                self._settings,
                max_partition_fetch_bytes=_ANY_BYTES,
                fetch_max_bytes=_ANY_BYTES,
                request_timeout_ms=int(self._timeout_s * 1000) + 5000,
            )
        return self._consumer

    def read(self, topic: str, partition: int, offset: int) -> bytes | None:
        where = f"{topic}/{partition}@{offset}"
        with self._lock, map_kafka_errors(f"read {where}"):
            c = self._client()
            parts = c.partitions_for_topic(topic)
            if not parts or partition not in parts:
                raise InputGoneError(f"{where}: topic or partition no longer exists")
            tp = TopicPartition(topic, partition)
            c.assign([tp])
            start = c.beginning_offsets([tp])[tp]
            end = c.end_offsets([tp])[tp]
            if offset < start:
                raise InputGoneError(
                    f"{where}: input no longer retained (log starts at offset {start})"
                )
            if offset >= end:
                raise DecisionNotFoundError(
                    f"{where}: no record at this offset (log ends at {end})"
                )
            c.seek(tp, offset)
            deadline = time.monotonic() + self._timeout_s
            while time.monotonic() < deadline:
                for rec in c.poll(timeout_ms=500, max_records=1).get(tp, []):
                    if rec.offset == offset:
                        return rec.value
                    if rec.offset > offset:
                        raise InputGoneError(
                            f"{where}: record no longer retained (next is {rec.offset})"
                        )
        raise BrokerError(f"{where}: no record within {self._timeout_s:g} s")

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
                self._consumer = None


class MemoryRecords:
    """In-memory ``RecordSource``: one list of values per (topic, partition), offsets from 0;
    ``retain_from`` simulates retention deleting the records below an offset."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[bytes | None]] = {}
        self.start: dict[tuple[str, int], int] = {}

    def append(self, topic: str, partition: int, value: bytes | None) -> int:
        log = self.records.setdefault((topic, partition), [])
        log.append(value)
        return len(log) - 1

    def retain_from(self, topic: str, partition: int, offset: int) -> None:
        self.start[(topic, partition)] = offset

    def read(self, topic: str, partition: int, offset: int) -> bytes | None:
        log = self.records.get((topic, partition))
        if log is None:
            raise InputGoneError(f"{topic}/{partition}: topic or partition no longer exists")
        if offset < self.start.get((topic, partition), 0):
            raise InputGoneError(f"{topic}/{partition}@{offset}: input no longer retained")
        if offset >= len(log):
            raise DecisionNotFoundError(f"{topic}/{partition}@{offset}: no record at this offset")
        return log[offset]
