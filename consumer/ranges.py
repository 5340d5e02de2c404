"""Chosen ranges of a topic: which offsets a selection (by offsets or by record time) holds, and a
bounded read of them that ends.

``spans_of`` resolves a ``Selection`` per partition against the log as it is when called: the log
start (retention), the end offsets (snapshotted there, so reading a live topic ends) and, for
times, ``offsets_for_times`` (the first record at or after the time; Kafka's record timestamps).
``read`` assigns and seeks a group-less ``read_committed`` reader (``consumer.kafka.reader``) and
yields batches until every partition has reached its end. ``allocator replay`` reads its input and
the published allocations this way, and ``allocator promoter evaluate`` a replay topic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from consumer.errors import BrokerError, ConfigError
from consumer.kafka import Record, map_kafka_errors

POLL_MS = 500
STALL_S = 30.0  # nothing readable this long before a partition's end: the broker is in trouble


@dataclass(frozen=True)
class Selection:
    """Records of ``topic`` to read: ``partitions`` (empty: all) and, per partition, a start
    (``start_offset`` or ``since_ms``) and an exclusive end (``end_offset`` or ``until_ms``)."""

    topic: str
    partitions: tuple[int, ...] = ()
    start_offset: int | None = None
    end_offset: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        s, e, since, until = self.start_offset, self.end_offset, self.since_ms, self.until_ms
        problems = []
        if s is not None and since is not None:
            problems.append("give a start offset or a start time, not both")
        if e is not None and until is not None:
            problems.append("give an end offset or an end time, not both")
        if any(o < 0 for o in (s, e, since, until, *self.partitions) if o is not None):
            problems.append("offsets, partitions and times are never negative")
        if s is not None and e is not None and s >= e:
            problems.append(f"start offset {s} is not before end offset {e} (the end is exclusive)")
        if since is not None and until is not None and since >= until:
            problems.append(f"start time {_iso(since)} is not before end time {_iso(until)}")
        if problems:
            raise ConfigError("bad range: " + "; ".join(problems))


@dataclass(frozen=True)
class Span:
    """One partition's offsets to read, ``[start, end)``; ``gone``: offsets asked for below the
    log start (removed by retention)."""

    partition: int
    start: int
    end: int
    gone: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def describe(topic: str, spans: Sequence[Span]) -> str:
    """The selection as resolved: ``topic/partition:start-end`` (end exclusive), comma-separated."""
    return ",".join(f"{topic}/{s.partition}:{s.start}-{s.end}" for s in spans if s.size > 0)


def _offsets_at(
    reader: KafkaConsumer, tps: list[TopicPartition], ms: int | None
) -> dict[TopicPartition, int | None]:
    if ms is None:
        return {}
    found = reader.offsets_for_times({tp: ms for tp in tps})
    return {tp: (None if found.get(tp) is None else found[tp].offset) for tp in tps}


def spans_of(reader: KafkaConsumer, sel: Selection) -> list[Span]:
    """``sel`` per partition, clamped to the log as it is now (its end offsets read here)."""
    with map_kafka_errors(f"offsets of {sel.topic}"):
        have = reader.partitions_for_topic(sel.topic)
        if not have:
            raise ConfigError(f"topic {sel.topic} does not exist")
        unknown = sorted(set(sel.partitions) - set(have))
        if unknown:
            raise ConfigError(
                f"topic {sel.topic} has no partition {unknown} (its partitions: 0-{max(have)})"
            )
        tps = [TopicPartition(sel.topic, p) for p in (sel.partitions or sorted(have))]
        low, high = reader.beginning_offsets(tps), reader.end_offsets(tps)
        since, until = (
            _offsets_at(reader, tps, sel.since_ms),
            _offsets_at(reader, tps, sel.until_ms),
        )
    spans = []
    for tp in tps:
        lo, hi = low[tp], high[tp]
        start, end, gone = lo, hi, 0
        if sel.start_offset is not None:
            start = max(lo, sel.start_offset)
            asked_end = lo if sel.end_offset is None else min(lo, sel.end_offset)
            gone = max(0, asked_end - sel.start_offset)
        if sel.since_ms is not None:
            first = since[tp]
            start = hi if first is None else first  # no record that late: nothing to read
        if sel.end_offset is not None:
            end = min(hi, sel.end_offset)
        stop = until.get(tp)
        if stop is not None:
            end = min(hi, stop)
        start = min(start, hi)
        spans.append(Span(tp.partition, start, max(start, end), gone))
    return spans


def resolve(reader: KafkaConsumer, sel: Selection) -> list[Span]:
    """``spans_of``, refusing a selection that holds no record."""
    spans = spans_of(reader, sel)
    if not any(s.size > 0 for s in spans):
        raise ConfigError(f"the range selects no record of {sel.topic}")
    return spans


def read(
    reader: KafkaConsumer,
    topic: str,
    spans: Sequence[Span],
    max_records: int,
    poll_ms: int = POLL_MS,
    stall_s: float = STALL_S,
) -> Iterator[list[Record]]:
    """The records of ``spans``, in batches of at most ``max_records``, until every partition has
    reached its end. ``BrokerError`` when nothing can be read for ``stall_s`` before that."""
    ends = {TopicPartition(topic, s.partition): s for s in spans if s.size > 0}
    if not ends:
        return
    with map_kafka_errors(f"read {topic}"):
        reader.assign(list(ends))
        for tp, span in ends.items():
            reader.seek(tp, span.start)
    todo, quiet = set(ends), time.monotonic()
    while todo:
        with map_kafka_errors(f"read {topic}"):
            polled = reader.poll(timeout_ms=poll_ms, max_records=max_records)
            batch = [
                r for tp, rs in polled.items() if tp in todo for r in rs if r.offset < ends[tp].end
            ]
            for tp in [tp for tp in todo if reader.position(tp) >= ends[tp].end]:
                todo.discard(tp)
                reader.pause(tp)  # nothing past the end is fetched
        if batch:
            quiet = time.monotonic()
            yield batch
        elif todo and time.monotonic() - quiet > stall_s:
            where = ", ".join(f"{tp.partition}@{reader.position(tp)}" for tp in sorted(todo))
            raise BrokerError(
                f"nothing readable from {topic} for {stall_s:.0f} s before the end of the "
                f"range (partition@offset: {where})"
            )
