"""The dead-letter topic, read and redriven: ``allocator dlq list`` and ``allocator dlq redrive``.

The DLQ contract, both sides: what the loop writes (``dlq_record``: the input record unchanged, key
and value, with the ``dlq/v1`` headers of ``dlq_headers``: the reason, the source coordinates, when,
and ``dlq.attempt``, how many times the record has failed, 1 the first time, one more after each
redrive) and what operators read (``DlqRecord``).

Redrive protocol, exactly once across a kill and a rerun:
1. The selection (filters, target, DLQ topic) has a fingerprint; it names the redrive's consumer
   group ``<group>.redrive.<fingerprint>`` (the durable cursor: committed offsets on the DLQ) and
   its transactional id. A rerun of the same selection resumes from the cursor; its
   ``init_transactions`` aborts whatever a killed run left open.
2. The end offsets of the DLQ are read once at the start: a run ends there, so records that fail
   again during the run (new DLQ records) wait for the next run.
3. Per batch of DLQ records (matching or not, so the cursor passes both): begin, send the matching
   ones to their target with the ``redrive.*`` headers, add the next DLQ offsets to the transaction
   for the cursor's group, commit. Nothing is sent that the cursor does not move past, atomically.
A record that has already failed ``max_attempts`` times is not redriven: it waits for a person; nor
is one whose value was too big to forward to the DLQ (``dlq.value.omitted``): its bytes are only at
its source coordinates.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer import __version__, ranges
from consumer.errors import DLQ_REASONS, ConfigError
from consumer.kafka import Record, map_kafka_errors, next_offsets

ATTEMPT = "dlq.attempt"
OMITTED = "dlq.value.omitted"  # the size of a value too big to forward (consumer.loop)
REDRIVE_ATTEMPT = "redrive.attempt"
REDRIVE_PREFIX = "redrive."


def _header(rec: Record, name: str) -> str | None:
    for k, v in rec.headers or ():
        if k == name:
            return v.decode("utf-8", "replace") if v is not None else None
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def attempts_of(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """How many times a record with these input headers has already failed: a redriven record says
    so in ``redrive.attempt``; a record never redriven has failed 0 times."""
    for k, v in headers or ():
        if k == REDRIVE_ATTEMPT:
            return max(0, _int(v.decode("ascii", "replace")) or 0)
    return 0


def dlq_headers(rec: Record, code: str, message: str) -> list[tuple[str, bytes]]:
    """The ``dlq/v1`` headers: the reason, the source coordinates, the consumer version, when, and
    ``dlq.attempt``: 1, or one more than a redriven record's ``redrive.attempt``. A redriven
    record's ``redrive.*`` headers (its first source, its DLQ origin) are kept."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fresh = [
        (k, v.encode())
        for k, v in (
            ("dlq.schema", "dlq/v1"),
            ("dlq.error.code", code),
            ("dlq.error.message", message[:1024]),
            ("dlq.source.topic", rec.topic),
            ("dlq.source.partition", str(rec.partition)),
            ("dlq.source.offset", str(rec.offset)),
            ("dlq.consumer.version", __version__),
            ("dlq.failed_at", now),
            (ATTEMPT, str(attempts_of(rec.headers) + 1)),
        )
    ]
    return fresh + [(k, v) for k, v in rec.headers or () if k.startswith(REDRIVE_PREFIX)]


# The largest dead-letter value forwarded as it is. kafka-python refuses a record over its
# max_request_size (1 MiB) before sending, and brokers default to about the same limit: a bigger
# value would fail the transaction on every retry and stall its partition. Such a value is left out
# of the DLQ record (``dlq.value.omitted`` gives its size); the source coordinates still find it.
DLQ_MAX_VALUE_BYTES = 1_000_000


def dlq_record(
    rec: Record, code: str, message: str
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value and headers of ``rec``'s DLQ record: its bytes unchanged, unless too big to
    send."""
    headers = dlq_headers(rec, code, message)
    value = rec.value
    if value is not None and len(value) > DLQ_MAX_VALUE_BYTES:
        headers.append((OMITTED, str(len(value)).encode()))
        value = None
    return value, headers


@dataclass(frozen=True)
class DlqRecord:
    """One DLQ record as an operator reads it. Headers the loop did not write (a record put in the
    DLQ by hand) read as ``None``; ``attempt`` is then 1."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    code: str | None
    message: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    attempt: int
    consumer_version: str | None
    omitted: int | None = None  # the value was too big for the DLQ: its size; find it at the source

    @classmethod
    def of(cls, rec: Record) -> DlqRecord:
        return cls(
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp,
            key=rec.key,
            value=rec.value,
            code=_header(rec, "dlq.error.code"),
            message=_header(rec, "dlq.error.message"),
            source_topic=_header(rec, "dlq.source.topic"),
            source_partition=_int(_header(rec, "dlq.source.partition")),
            source_offset=_int(_header(rec, "dlq.source.offset")),
            attempt=max(1, _int(_header(rec, ATTEMPT)) or 1),
            consumer_version=_header(rec, "dlq.consumer.version"),
            omitted=_int(_header(rec, OMITTED)),
        )

    def row(self, show_text: bool = False) -> dict[str, Any]:
        """A JSON-able summary. The value (the complaint, personal data) and the error message
        (which may quote it) only with ``show_text``."""
        out: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "failed_at": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "code": self.code,
            "attempt": self.attempt,
            "source": None
            if self.source_topic is None
            else f"{self.source_topic}/{self.source_partition}:{self.source_offset}",
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "bytes": self.omitted or (0 if self.value is None else len(self.value)),
            "value_omitted": self.omitted is not None,
        }
        if show_text:
            out["message"] = self.message
            out["value"] = None if self.value is None else self.value.decode("utf-8", "replace")
        return out


@dataclass(frozen=True)
class Filter:
    """Which dead letters: by reason (any of ``codes``; empty: all) and by source coordinates
    (``source_offsets`` is ``[start, end)``). Time and DLQ partitions are the ``ranges.Selection``
    of the DLQ topic itself."""

    codes: frozenset[str] = frozenset()
    source_topic: str | None = None
    source_partition: int | None = None
    source_offsets: tuple[int | None, int | None] = (None, None)

    def __post_init__(self) -> None:
        unknown = sorted(self.codes - set(DLQ_REASONS))
        if unknown:
            raise ConfigError(f"unknown DLQ reason {unknown}; known: {', '.join(DLQ_REASONS)}")
        lo, hi = self.source_offsets
        if lo is not None and hi is not None and lo >= hi:
            raise ConfigError(f"source offset range {lo}-{hi} is empty (the end is exclusive)")

    def matches(self, d: DlqRecord) -> bool:
        if self.codes and d.code not in self.codes:
            return False
        if self.source_topic is not None and d.source_topic != self.source_topic:
            return False
        if self.source_partition is not None and d.source_partition != self.source_partition:
            return False
        lo, hi = self.source_offsets
        if lo is None and hi is None:
            return True
        if d.source_offset is None:
            return False
        return (lo is None or d.source_offset >= lo) and (hi is None or d.source_offset < hi)


def scan(
    reader: KafkaConsumer, dlq: ranges.Selection, batch: int = 500
) -> Iterator[tuple[Record, DlqRecord]]:
    """Every record of the DLQ range as it is now (its end read once, here), parsed."""
    spans = ranges.spans_of(reader, dlq)
    for records in ranges.read(reader, dlq.topic, spans, batch):
        for rec in records:
            yield rec, DlqRecord.of(rec)


def listing(
    reader: KafkaConsumer, dlq: ranges.Selection, where: Filter, limit: int | None = None
) -> tuple[list[DlqRecord], int]:
    """(the matching dead letters, at most ``limit``; how many records were scanned)."""
    found: list[DlqRecord] = []
    scanned = 0
    for _, d in scan(reader, dlq):
        scanned += 1
        if where.matches(d) and (limit is None or len(found) < limit):
            found.append(d)
    return found, scanned


@dataclass(frozen=True)
class Redrive:
    """What to redrive and where: ``to`` is a fixed target topic, or None for each record's source
    topic (``default_topic`` when the record does not name one)."""

    dlq: ranges.Selection
    where: Filter
    to: str | None
    default_topic: str
    max_attempts: int
    forbidden: frozenset[str]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        for topic in (self.to, self.default_topic):
            if topic in self.forbidden:
                raise ConfigError(f"will not redrive into {topic}: it is an output topic")

    def fingerprint(self) -> str:
        """Stable across runs of the same selection: it names the cursor and the transactional
        id."""
        doc = {
            "dlq": asdict(self.dlq),
            "codes": sorted(self.where.codes),
            "source": [self.where.source_topic, self.where.source_partition],
            "source_offsets": list(self.where.source_offsets),
            "to": self.to,
            "default_topic": self.default_topic,
            "max_attempts": self.max_attempts,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def target(self, d: DlqRecord) -> str:
        """Where ``d`` goes back to; never an output topic."""
        topic = self.to or d.source_topic or self.default_topic
        if topic in self.forbidden:
            raise ConfigError(
                f"DLQ record {d.partition}:{d.offset} names {topic} as its source, an output "
                "topic; give --to"
            )
        return topic


def redrive_headers(d: DlqRecord, dlq_topic: str, fingerprint: str) -> list[tuple[str, bytes]]:
    """The ``redrive.*`` headers of a redriven record: which attempt this is (the record's failures
    so far), where it was in the DLQ, where it first came from, which redrive sent it."""
    pairs = [
        (REDRIVE_ATTEMPT, str(d.attempt)),
        ("redrive.origin.topic", dlq_topic),
        ("redrive.origin.partition", str(d.partition)),
        ("redrive.origin.offset", str(d.offset)),
        ("redrive.selection", fingerprint),
    ]
    if d.source_topic is not None:
        pairs += [
            ("redrive.source.topic", d.source_topic),
            ("redrive.source.partition", str(d.source_partition)),
            ("redrive.source.offset", str(d.source_offset)),
        ]
    return [(k, v.encode()) for k, v in pairs]


@dataclass
class RedriveReport:
    """One run's figures. ``cursor``: where each DLQ partition's run started (the cursor it
    resumed from)."""

    fingerprint: str
    scanned: int = 0
    sent: int = 0
    exhausted: int = 0  # matched, but failed max_attempts times already: left for a person
    omitted: int = 0  # matched, but the value was too big for the DLQ: only its source has it
    batches: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    cursor: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "selection": self.fingerprint,
            "scanned": self.scanned,
            "sent": self.sent,
            "exhausted": self.exhausted,
            "omitted": self.omitted,
            "batches": self.batches,
            "by_code": dict(self.by_code),
            "by_target": dict(self.by_target),
            "resumed_from": {str(p): o for p, o in sorted(self.cursor.items())},
        }


def _resume(
    cursor: KafkaConsumer, spans: list[ranges.Span], topic: str, report: RedriveReport
) -> list[ranges.Span]:
    """The spans from the cursor on: a partition's committed offset of the redrive group, if it is
    past the span's start."""
    out = []
    for s in spans:
        committed = cursor.committed(TopicPartition(topic, s.partition))
        start = min(s.end, max(s.start, committed or 0))
        report.cursor[s.partition] = start
        out.append(ranges.Span(s.partition, start, s.end, s.gone))
    return out


def redrive(
    cursor: KafkaConsumer,
    producer: KafkaProducer | None,
    job: Redrive,
    batch: int = 100,
    on_batch: Callable[[RedriveReport], None] | None = None,
) -> RedriveReport:
    """Run ``job`` (see the module docstring); ``producer`` None is a dry run: the same selection,
    counted, nothing sent, the cursor left where it is. ``cursor`` is a consumer of the redrive's
    group (``group_metadata`` names it), assigned here."""
    report = RedriveReport(job.fingerprint())
    spans = _resume(cursor, ranges.spans_of(cursor, job.dlq), job.dlq.topic, report)
    for records in ranges.read(cursor, job.dlq.topic, spans, batch):
        chosen = []
        for rec in records:
            d = DlqRecord.of(rec)
            report.scanned += 1
            if not job.where.matches(d):
                continue
            if d.attempt >= job.max_attempts:
                report.exhausted += 1
                continue
            if d.omitted is not None:
                report.omitted += 1
                continue
            chosen.append((job.target(d), rec, d))
        if producer is not None:
            _send(producer, cursor, job, report.fingerprint, records, chosen)
        for topic, _, d in chosen:
            report.sent += 1
            report.by_code[d.code or "unknown"] += 1
            report.by_target[topic] += 1
        report.batches += 1
        if on_batch is not None:
            on_batch(report)
    return report


def _send(
    producer: KafkaProducer,
    cursor: KafkaConsumer,
    job: Redrive,
    fingerprint: str,
    records: Sequence[Record],
    chosen: Sequence[tuple[str, Record, DlqRecord]],
) -> None:
    """One transaction: the chosen records to their targets, the cursor past every record read."""
    with map_kafka_errors("redrive transaction"):
        producer.begin_transaction()
        try:
            for topic, rec, d in chosen:
                producer.send(
                    topic,
                    key=rec.key,
                    value=rec.value,
                    headers=redrive_headers(d, job.dlq.topic, fingerprint),
                )
            producer.send_offsets_to_transaction(next_offsets(records), cursor.group_metadata())
            producer.commit_transaction()
        except BaseException:
            # the rerun's init_transactions would abort it too; aborting now frees the records
            with map_kafka_errors("redrive abort"):
                producer.abort_transaction()
            raise
