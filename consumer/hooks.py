"""Small hooks the loop calls after each step; they translate loop events into metrics (faust-style
sensors)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kafka import KafkaConsumer

from consumer.kafka import Record
from consumer.kafka import lag as kafka_lag
from consumer.metrics import ConsumerMetrics

if TYPE_CHECKING:
    from consumer.breaker import Breaker
    from consumer.loop import DeadLetter
    from consumer.router import Routed


class LoopHooks:
    def __init__(self, metrics: ConsumerMetrics, lag_every_s: float = 2.0) -> None:
        self.m = metrics
        self._lag_every_s = lag_every_s
        self._lag_at = 0.0
        self.last_beat = time.monotonic()  # liveness: the loop came back from poll
        self.breaker_open = False  # readiness: false while the circuit breaker holds the input

    def after_poll(self, consumer: KafkaConsumer) -> None:
        """Partition count and lag, at most every ``lag_every_s`` (highwater marks come with
        fetches: no I/O)."""
        now = self.last_beat = time.monotonic()
        if now - self._lag_at < self._lag_every_s:
            return
        self._lag_at = now
        assigned, behind = kafka_lag(consumer)
        self.m.assigned.set(assigned)
        self.m.lag.set(behind)

    def committed(
        self,
        records: Sequence[Record],
        routed: Routed,
        dead: Sequence[DeadLetter],
        started: float,
    ) -> None:
        """A batch committed: counts, sizes, latencies, predictions, dead letters, shadow
        agreement."""
        m = self.m
        now_s = time.time()
        m.consumed.inc(len(records))
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(time.monotonic() - started)
        m.transactions.labels("committed").inc()
        for version, seconds in routed.inference_seconds.items():
            m.inference_seconds.labels(version).observe(seconds)
        for d in dead:
            m.dlq.labels(d.code).inc()
        by_offset = {(r.partition, r.offset): r.timestamp for r in records}
        for item, alloc in routed.allocations:
            m.allocations.labels(alloc.journey).inc()
            ts = by_offset.get((item.source.partition, item.source.offset))
            if ts is not None and ts > 0:
                m.e2e_seconds.observe(max(0.0, now_s - ts / 1000))
            for task, p in alloc.predictions.items():
                m.predictions.labels(task, p.label, p.model.version, p.arm).inc()
            for task, r in alloc.routing.items():
                m.routed.labels(task, alloc.predictions[task].model.version, r.decision).inc()
                if r.decision == "review":
                    m.needs_review.labels(task).inc()
            if "vulnerable_guardrail" in alloc.review_reasons:
                m.needs_review.labels("vulnerable_guardrail").inc()
        for shadow in routed.shadows:
            for task, agree in shadow.agreement.items():
                m.shadow_agreement.labels(
                    task, shadow.predictions[task].model.version, str(agree).lower()
                ).inc()
                published = shadow.published[task]
                score = next(
                    (s.score for s in shadow.predictions[task].top_k if s.label == published.label),
                    0.0,
                )
                m.shadow_delta.labels(task).observe(score - published.score)

    def breaker(self, breaker: Breaker) -> None:
        """The breaker's state after a batch or a plan change; a new opening counts as a trip."""
        open_now = breaker.state != "closed"
        if open_now and not self.breaker_open:
            self.m.breaker_trips.inc()
        self.breaker_open = open_now
        self.m.breaker_open.set(1 if open_now else 0)

    def aborted(self) -> None:
        """A batch's transaction was aborted (the batch is read again)."""
        self.m.transactions.labels("aborted").inc()
