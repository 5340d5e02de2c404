"""``allocator replay``: re-score a range of the input topic with a named model or a strategy, into
a topic of one's choice, and measure how far it agrees with what was published.

Steps, in the order ``consumer.cli_replay`` runs them (nothing is sent before step 4):
1. ``check_target``: the output is none of the topics the system reads or writes (allocations,
   complaints, the DLQ, shadow results, feedback), nor the topic replayed.
2. What scores: a named model serves every task as champion (``model_strategy``, strategy version
   0); a strategy keeps its canary arms (sticky by complaint id, so each complaint gets the arm it
   got live) and drops its shadow arms, which publish nothing (``published_only``).
3. ``consumer.ranges.resolve``: per partition, ``[start, end)`` from offsets or record times,
   clamped to the log and to the end offsets read now, so a replay of a live topic ends. A
   selection that holds no record is an error.
4. ``Replay.run``: the ranges are read (``consumer.ranges.read``) in batches, decoded,
   routed by ``Router`` under the plan and sent as ``allocation/v1`` records with the
   ``replay-headers/v1`` headers (``replay_headers``), flushed per batch. Undecodable records (they
   went to the DLQ live) and model failures are counted, never sent.
5. ``Replay.agree``: the published allocations are read back from the allocations topic (from the
   first replayed record's time, up to ``window_ms`` after the last) and joined on ``decision_id``,
   which depends on the source coordinates only (``router.decision_id``), so a replayed decision and
   the published one of the same input record share it.

A replay is deterministic up to its timestamps: run again, it sends the same decisions with the same
``replay.id`` and ``decision_id``s, so a reader drops what an interrupted run sent twice. For the
agreement it keeps the labels of every replayed decision (~250 bytes each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from kafka import KafkaConsumer, KafkaProducer

from consumer import __version__
from consumer.contracts.messages import Allocation, Source, dump
from consumer.decode import decode_complaint
from consumer.errors import BrokerError, ConfigError, ContractError, StrategyValidationError
from consumer.kafka import Record, map_kafka_errors
from consumer.plan import Plan
from consumer.ranges import Selection, Span, read, spans_of
from consumer.router import Item, Router
from consumer.settings import CommonSettings
from consumer.strategy import ROUTING_TASKS, Strategy, TaskPlan

SKEW_MS = 300_000  # producers' clocks differ: look for published allocations from 5 min earlier
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def protected_topics(settings: CommonSettings, source: str) -> dict[str, str]:
    """The topics a replay must never write into, and what each one is."""
    return {
        source: "the topic replayed",
        settings.topic_complaints: "the input topic (ALLOCATOR_TOPIC_COMPLAINTS)",
        **settings.output_topics(),
    }


def check_target(target: str, protected: Mapping[str, str]) -> None:
    if target in protected:
        raise ConfigError(
            f"refusing to write a replay into {target}: it is {protected[target]}; "
            "give the replay a topic of its own"
        )
    if not TOPIC_NAME.match(target):
        raise ConfigError(f"{target!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")


def model_strategy(ref: str, tasks: Collection[str]) -> Strategy:
    """``ref`` as champion of every task it has a head for (strategy version 0)."""
    missing = [t for t in ROUTING_TASKS if t not in tasks]
    if missing:
        raise StrategyValidationError(
            f"model {ref} has no {'/'.join(missing)} head: an allocation needs "
            f"{', '.join(ROUTING_TASKS)}"
        )
    plans = {t: TaskPlan("champion", ref) for t in sorted(tasks)}
    return Strategy(0, plans, updated_by="allocator replay", reason=f"replay of {ref}")


def published_only(strategy: Strategy) -> Strategy:
    """The strategy without its shadow arms: a replay scores only what would be published."""
    tasks = {
        t: TaskPlan("champion", p.champion) if p.mode == "shadow" else p
        for t, p in strategy.tasks.items()
    }
    return dataclasses.replace(strategy, tasks=tasks)


def replay_id(strategy: Strategy, selection: str) -> str:
    """Fixed by what scores and what is read: the same replay run again has the same id."""
    return hashlib.sha256(f"{strategy.to_json()}\n{selection}".encode()).hexdigest()[:16]


def replay_headers(rid: str, of: str, selection: str, source: Source) -> list[tuple[str, bytes]]:
    """The ``replay-headers/v1`` headers: which replay, of what, and the source record."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        (k, v.encode())
        for k, v in (
            ("replay.schema", "replay/v1"),
            ("replay.id", rid),
            ("replay.of", of),
            ("replay.selection", selection),
            ("replay.source.topic", source.topic),
            ("replay.source.partition", str(source.partition)),
            ("replay.source.offset", str(source.offset)),
            ("replay.consumer.version", __version__),
            ("replay.at", now),
        )
    ]


@dataclass
class TaskCounts:
    replayed: int = 0
    published: int = 0  # replayed decisions with a published prediction for the task
    agreed: int = 0

    @property
    def share(self) -> float | None:
        return self.agreed / self.published if self.published else None


@dataclass
class Report:
    """What a replay did; ``to_dict`` is the ``--json`` document. Never any complaint text."""

    replay_id: str
    of: str
    source: str
    selection: str
    spans: list[Span]
    target: str | None = None
    jsonl: str | None = None
    read: int = 0
    replayed: int = 0
    undecodable: Counter[str] = field(default_factory=Counter)
    model_failures: int = 0
    published_topic: str = ""
    published_scanned: int = 0
    published_found: int = 0
    published_unreadable: int = 0
    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    published_models: dict[str, Counter[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["undecodable"] = dict(self.undecodable)
        doc["published_models"] = {t: dict(c) for t, c in sorted(self.published_models.items())}
        doc["spans"] = [dataclasses.asdict(s) | {"offsets": s.size} for s in self.spans]
        doc["tasks"] = {
            t: dataclasses.asdict(c) | {"agreement": c.share} for t, c in sorted(self.tasks.items())
        }
        return doc


class Output:
    """Where replayed allocations go: a topic through a plain producer, JSON lines, or both."""

    def __init__(
        self,
        producer: KafkaProducer | None = None,
        topic: str | None = None,
        jsonl: IO[str] | None = None,
    ) -> None:
        self.producer, self.topic, self.jsonl = producer, topic, jsonl
        self._failed: list[Exception] = []

    def send(self, alloc: Allocation, headers: list[tuple[str, bytes]]) -> None:
        value = dump(alloc)
        if self.producer is not None:
            with map_kafka_errors(f"replay to {self.topic}"):
                future = self.producer.send(
                    self.topic, key=alloc.complaint_id.encode(), value=value, headers=headers
                )
            future.add_errback(self._failed.append)  # called on the client's I/O thread
        if self.jsonl is not None:
            self.jsonl.write(value.decode("utf-8") + "\n")

    def flush(self) -> None:
        if self.producer is not None:
            with map_kafka_errors(f"replay to {self.topic}"):
                self.producer.flush()
        if self._failed:
            raise BrokerError(
                f"replay to {self.topic}: {len(self._failed)} records were not delivered; "
                f"first: {self._failed[0]}"
            )


class Replay:
    """Scores batches under ``plan`` into ``output`` and keeps each decision's labels for
    ``agree``."""

    def __init__(self, plan: Plan, report: Report, output: Output, limits: tuple[int, int]) -> None:
        self.router = Router(plan)
        self.report = report
        self.output = output
        self.limits = limits
        self.task_order = tuple(sorted(plan.strategy.tasks))
        self.decisions: dict[str, tuple[str, ...]] = {}
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        report.tasks = {t: TaskCounts() for t in self.task_order}

    def run(self, reader: KafkaConsumer, spans: Sequence[Span], max_records: int) -> None:
        for batch in read(reader, self.report.source, spans, max_records):
            self.batch(batch)

    def batch(self, records: Sequence[Record]) -> None:
        started, items, report = time.monotonic(), [], self.report
        for rec in records:
            report.read += 1
            ts = rec.timestamp
            self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
            self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)
            try:
                complaint = decode_complaint(rec.value, *self.limits)
            except ContractError as exc:
                report.undecodable[exc.code] += 1
                continue
            source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset)
            items.append(Item(complaint, source, started))
        if not items:
            return
        routed = self.router.route(items)
        report.model_failures += len(routed.failures)
        for item, alloc in routed.allocations:
            self.output.send(
                alloc, replay_headers(report.replay_id, report.of, report.selection, item.source)
            )
            self.decisions[alloc.decision_id] = tuple(
                alloc.predictions[t].label for t in self.task_order
            )
            report.replayed += 1
            for t in self.task_order:
                report.tasks[t].replayed += 1
        self.output.flush()

    def agree(self, reader: KafkaConsumer, topic: str, window_ms: int, max_records: int) -> None:
        """Join the published allocations of ``topic`` with the replayed decisions."""
        report = self.report
        report.published_topic = topic
        if not self.decisions or self.first_ms is None or self.last_ms is None:
            return
        with map_kafka_errors(f"replay: offsets of {topic}"):
            exists = bool(reader.partitions_for_topic(topic))
        if not exists:
            return
        # never below 0: Kafka reads negative times as "earliest"/"latest"
        since, until = max(0, self.first_ms - SKEW_MS), max(1, self.last_ms + window_ms)
        spans = spans_of(reader, Selection(topic, since_ms=since, until_ms=until))
        found: set[str] = set()
        for batch in read(reader, topic, spans, max_records):
            for rec in batch:
                report.published_scanned += 1
                self._published(rec.value, found)
            if len(found) == len(self.decisions):
                break  # every replayed decision has its published one
        report.published_found = len(found)

    def _published(self, value: bytes | None, found: set[str]) -> None:
        try:
            doc = json.loads(value or b"")
            did = doc["decision_id"]
            if did not in self.decisions or did in found:
                return
            preds = {
                t: (p["label"], f"{p['model']['name']}@{p['model']['version']}")
                for t, p in doc["predictions"].items()
            }
        except (ValueError, KeyError, TypeError):
            self.report.published_unreadable += 1
            return
        found.add(did)
        for task, label in zip(self.task_order, self.decisions[did], strict=True):
            if task not in preds:
                continue
            counts = self.report.tasks[task]
            counts.published += 1
            counts.agreed += preds[task][0] == label
            self.report.published_models.setdefault(task, Counter())[preds[task][1]] += 1
