"""The hot loop: one bounded micro-batch at a time, outputs and input offsets in one Kafka
transaction.

Commit protocol, per micro-batch (DESIGN section 5):
1. ``poll`` at most ``batch_max_messages`` records (``read_committed``; bounded fetch, so bounded
   memory).
2. Decode each record; a bad one becomes a DLQ record with its reason, never an exception.
3. Route the good ones under the plan in force at the start of the batch (one strategy version per
   batch).
4. ``begin_transaction``; send allocations, shadow results and DLQ records; add the next input
   offsets with the consumer group metadata (KIP-447 fencing); ``commit_transaction``.
5. On a transaction error: abort, seek every partition of the batch back to its first record, and
   retry it. ``ProducerFencedError`` (a newer instance took over) is fatal: the process exits and is
   restarted.
The batch is committed before the next ``poll``, so a rebalance never finds work in flight, and a
SIGTERM (``stop`` set) lets the current batch finish before the loop returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka import errors as kerrors

from consumer import __version__
from consumer.contracts.messages import Source, dump
from consumer.decode import decode_complaint
from consumer.errors import BrokerError, ContractError
from consumer.hooks import LoopHooks
from consumer.kafka import rewind
from consumer.plan import Plan
from consumer.router import Item, Router

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    allocations: str
    shadow: str
    dlq: str


def dlq_headers(rec: Any, code: str, message: str) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
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
        )
    ]


class Loop:
    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        plan: Callable[[], Plan | None],
        topics: Topics,
        hooks: LoopHooks,
        max_records: int,
        wait_ms: int,
        max_bytes: int,
        max_text_chars: int,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.plan = plan
        self.topics = topics
        self.hooks = hooks
        self.max_records = max_records
        self.wait_ms = wait_ms
        self.limits = (max_bytes, max_text_chars)
        self._router: Router | None = None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            polled = self.consumer.poll(timeout_ms=self.wait_ms, max_records=self.max_records)
            records = [r for batch in polled.values() for r in batch]
            if records:
                self.process(records)
            self.hooks.after_poll(self.consumer)

    def router(self) -> Router | None:
        plan = self.plan()
        if plan is None:
            return None
        if self._router is None or self._router.plan is not plan:
            self._router = Router(plan)
        return self._router

    def process(self, records: list[Any]) -> None:
        started = time.monotonic()
        router = self.router()
        if router is None:  # no model yet: leave the records for later, do not lose them
            self._rewind(records)
            time.sleep(self.wait_ms / 1000)
            return
        items, dead = [], []
        for rec in records:
            try:
                c = decode_complaint(rec.value, *self.limits)
            except ContractError as exc:
                dead.append((rec, exc.code, str(exc)))
                continue
            items.append(
                (
                    rec,
                    Item(
                        c,
                        Source(topic=rec.topic, partition=rec.partition, offset=rec.offset),
                        started,
                    ),
                )
            )
        by_item = {id(item): rec for rec, item in items}
        routed = router.route([item for _, item in items])
        dead += [(by_item[id(it)], exc.code, str(exc)) for it, exc in routed.failures]
        try:
            self.producer.begin_transaction()
            for item, alloc in routed.allocations:
                self.producer.send(
                    self.topics.allocations,
                    key=item.complaint.complaint_id.encode(),
                    value=dump(alloc),
                )
            for shadow in routed.shadows:
                self.producer.send(
                    self.topics.shadow, key=shadow.complaint_id.encode(), value=dump(shadow)
                )
            for rec, code, message in dead:
                self.producer.send(
                    self.topics.dlq,
                    key=rec.key,
                    value=rec.value,
                    headers=dlq_headers(rec, code, message),
                )
            self.producer.send_offsets_to_transaction(
                self._next_offsets(records), self.consumer.group_metadata()
            )
            self.producer.commit_transaction()
        except kerrors.ProducerFencedError:
            raise
        except kerrors.KafkaError as exc:
            log.warning("transaction failed; retrying the batch", extra={"error": repr(exc)})
            self._abort()
            self._rewind(records)
            self.hooks.aborted()
            return
        self.hooks.committed(records, routed, dead, started)

    def _abort(self) -> None:
        """Abort the open transaction. An abort that fails leaves the producer unusable
        (kafka-python treats request timeouts as fatal): raise, so the process restarts and the same
        transactional id cleans up."""
        try:
            self.producer.abort_transaction()
        except kerrors.KafkaError as exc:
            raise BrokerError(
                f"transaction abort failed; the producer is unusable: {exc!r}"
            ) from exc

    @staticmethod
    def _next_offsets(records: list[Any]) -> dict[TopicPartition, OffsetAndMetadata]:
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in out or out[tp].offset <= r.offset:
                out[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        return out

    def _rewind(self, records: list[Any]) -> None:
        rewind(self.consumer, records)
