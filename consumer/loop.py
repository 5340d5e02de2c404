"""The hot loop: one bounded micro-batch at a time, outputs and input offsets in one Kafka
transaction.

Commit protocol, per micro-batch (DESIGN section 5); each step is marked ``# (n)`` in the code:
1. ``poll`` at most ``batch_max_messages`` records (``read_committed``; bounded fetch, so bounded
   memory).
2. Decode each record; a bad one becomes a ``DeadLetter`` with its reason, never an exception.
3. Route the good ones under the plan in force at the start of the batch (one strategy version per
   batch); a model failure on one record makes that record a dead letter, not the batch.
4. ``begin_transaction``; send allocations, shadow results and dead letters; add the next input
   offsets with the consumer group metadata (KIP-447 fencing); ``commit_transaction``.
5. On a transaction error: abort, seek every partition of the batch back to its first record, and
   retry it. ``ProducerFencedError`` (a newer instance took over) is fatal: the process exits and is
   restarted. An abort that fails is fatal too (``BrokerError``).
With no plan yet (no strategy and no configured model), the batch is rewound, not lost.
When the model fails on most recent records, the circuit breaker (``consumer.breaker``) opens: the
batch that tipped it is rewound, not dead-lettered, and the loop holds its partitions (paused, still
a group member, committing nothing) until a new plan arrives or a trial batch succeeds.
The batch is committed before the next ``poll``, so a rebalance never finds work in flight, and a
SIGTERM (``stop`` set) lets the current batch finish before the loop returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kerrors

from consumer.breaker import Breaker
from consumer.contracts.messages import Source, dump
from consumer.decode import decode_complaint
from consumer.dlq import dlq_record
from consumer.errors import BrokerError, ContractError
from consumer.hooks import LoopHooks
from consumer.kafka import Record, next_offsets, rewind
from consumer.plan import Plan
from consumer.router import Item, Routed, Router

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    allocations: str
    shadow: str
    dlq: str


@dataclass(frozen=True)
class DeadLetter:
    """A record the loop could not allocate, and why: it goes to the DLQ unchanged (same key and
    value), with ``consumer.dlq.dlq_headers`` saying where it came from. ``code`` is one of
    ``errors.DLQ_REASONS``."""

    record: Record
    code: str
    message: str


class Loop:
    """Allocates what ``consumer`` reads, exactly once, through ``producer``'s transactions.

    ``plan`` returns the plan in force (or None before there is one); it is read once per batch.
    """

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
        breaker: Breaker,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.plan = plan
        self.topics = topics
        self.hooks = hooks
        self.max_records = max_records
        self.wait_ms = wait_ms
        self.limits = (max_bytes, max_text_chars)
        self.breaker = breaker
        self._router: Router | None = None

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in hand is finished first."""
        while not stop.is_set():
            self.turn()

    def turn(self) -> None:
        """One round: a batch polled and processed, or, while the breaker holds, a poll of paused
        partitions that keeps the group membership."""
        if self.breaker.resumes_with(self.plan()):
            self.hooks.breaker(self.breaker)
        if self.breaker.holding:
            self._hold()
            return
        if self.consumer.paused():  # closed or half-open: read again
            self.consumer.resume(*self.consumer.paused())
        # (1)
        polled = self.consumer.poll(timeout_ms=self.wait_ms, max_records=self.max_records)
        records: list[Record] = [r for batch in polled.values() for r in batch]
        if records:
            self.process(records)
        self.hooks.after_poll(self.consumer)

    def router(self) -> Router | None:
        """A router over the plan in force, rebuilt only when the plan object changes."""
        plan = self.plan()
        if plan is None:
            return None
        if self._router is None or self._router.plan is not plan:
            self._router = Router(plan)
        return self._router

    def process(self, records: Sequence[Record]) -> None:
        """One micro-batch: committed with its outputs, or rewound to be read again."""
        started = time.monotonic()
        router = self.router()
        if router is None:  # no model yet: leave the records for later, do not lose them
            rewind(self.consumer, records)
            time.sleep(self.wait_ms / 1000)
            return
        items, dead = self._decode(records, started)  # (2)
        routed = router.route([item for _, item in items])  # (3)
        by_item = {id(item): rec for rec, item in items}
        if not self.breaker.admit(len(routed.failures), len(items), router.plan):
            rewind(self.consumer, records)  # held, not dead-lettered: a new plan will take them
            self.hooks.breaker(self.breaker)
            log.error("circuit breaker open", extra={"reason": self.breaker.reason})
            return
        dead += [DeadLetter(by_item[id(it)], exc.code, str(exc)) for it, exc in routed.failures]
        try:
            self._transact(records, routed, dead)  # (4)
        except kerrors.ProducerFencedError:
            raise
        except kerrors.KafkaError as exc:  # (5)
            log.warning("transaction failed; retrying the batch", extra={"error": repr(exc)})
            self._abort()
            rewind(self.consumer, records)
            self.hooks.aborted()
            return
        self.hooks.committed(records, routed, dead, started)
        self.hooks.breaker(self.breaker)

    def _hold(self) -> None:
        """The breaker is open: pause every owned partition and poll, which keeps the group
        membership (partitions assigned by a rebalance since are paused on the next round) and
        returns nothing from paused partitions; anything fetched before the pause is rewound."""
        owned = self.consumer.assignment()
        if owned:
            self.consumer.pause(*owned)
        polled = self.consumer.poll(timeout_ms=self.wait_ms, max_records=self.max_records)
        records = [r for batch in polled.values() for r in batch]
        if records:
            rewind(self.consumer, records)
        self.hooks.after_poll(self.consumer)

    def _decode(
        self, records: Sequence[Record], started: float
    ) -> tuple[list[tuple[Record, Item]], list[DeadLetter]]:
        items: list[tuple[Record, Item]] = []
        dead: list[DeadLetter] = []
        for rec in records:
            try:
                complaint = decode_complaint(rec.value, *self.limits)
            except ContractError as exc:
                dead.append(DeadLetter(rec, exc.code, str(exc)))
                continue
            source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset)
            items.append((rec, Item(complaint, source, started)))
        return items, dead

    def _transact(
        self, records: Sequence[Record], routed: Routed, dead: Sequence[DeadLetter]
    ) -> None:
        send = self.producer.send
        self.producer.begin_transaction()
        for item, alloc in routed.allocations:
            send(
                self.topics.allocations,
                key=item.complaint.complaint_id.encode(),
                value=dump(alloc),
            )
        for shadow in routed.shadows:
            send(self.topics.shadow, key=shadow.complaint_id.encode(), value=dump(shadow))
        for d in dead:
            value, headers = dlq_record(d.record, d.code, d.message)
            send(self.topics.dlq, key=d.record.key, value=value, headers=headers)
        # the input offsets commit with the outputs, fenced by the group generation (KIP-447)
        self.producer.send_offsets_to_transaction(
            next_offsets(records), self.consumer.group_metadata()
        )
        self.producer.commit_transaction()

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
