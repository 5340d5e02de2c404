"""The promoter's loop: one batch at a time from the three topics, state before offsets, then
evaluation.

Per batch:
1. ``poll`` at most ``max_records`` records from allocations, shadow results and feedback
   (read_committed).
2. Decode each (a malformed one is counted, never raised).
3. Apply the batch to the Redis state in one transaction (``state.JoinStore.apply``); if Redis is
   down, seek back and retry the batch later: nothing is lost and nothing is committed.
4. Commit the Kafka offsets (a failure only means a replay, which the state drops as already
   applied).
5. Evaluate the experiments the batch labelled (``evaluate.Evaluator``).
Between batches, ``tick`` refreshes the running experiments from the strategy (every second), counts
expired parked feedback and refreshes gauges (every few seconds), and logs a status line and
re-evaluates every running experiment (every minute: this also finishes a decision interrupted by a
crash).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from kafka import KafkaConsumer
from kafka import errors as kerrors

from consumer.errors import StoreUnavailableError, StrategyError
from consumer.kafka import Record, next_offsets, rewind
from consumer.store import HISTORY_LIMIT, StrategyStore
from promoter.evaluate import Evaluator, Verdict
from promoter.experiments import Experiment, running
from promoter.hooks import PromoterHooks
from promoter.records import Decoded, Kind, decode
from promoter.state import JoinStore

log = logging.getLogger(__name__)

STRATEGY_EVERY_S = 1.0
GAUGES_EVERY_S = 5.0
STATUS_EVERY_S = 60.0
RETRY_SLEEP_S = 1.0


class RunningExperiments:
    """The experiments in force, re-read when the strategy version changes; the last good set on
    errors."""

    def __init__(self, store: StrategyStore) -> None:
        self.store = store
        self.version = -1
        self.experiments: dict[str, Experiment] = {}

    def refresh(self) -> Mapping[str, Experiment]:
        try:
            current = self.store.current()
            version = current.version if current else 0
            if version != self.version:
                history = self.store.history(HISTORY_LIMIT) if current else []
                self.experiments = running(current, history)
                self.version = version
                log.info(
                    "experiments",
                    extra={"strategy_version": version, "running": sorted(self.experiments)},
                )
        except (StoreUnavailableError, StrategyError) as exc:
            log.warning(
                "strategy unreadable; keeping the experiments known", extra={"error": str(exc)}
            )
        return self.experiments


class PromoterLoop:
    def __init__(
        self,
        consumer: KafkaConsumer,
        kinds: Mapping[str, Kind],
        state: JoinStore,
        experiments: RunningExperiments,
        evaluator: Evaluator,
        hooks: PromoterHooks,
        max_records: int = 500,
        wait_ms: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.consumer = consumer
        self.kinds = kinds
        self.state = state
        self.experiments = experiments
        self.evaluator = evaluator
        self.hooks = hooks
        self.max_records = max_records
        self.wait_ms = wait_ms
        self.clock = clock
        self._due = {"strategy": 0.0, "gauges": 0.0, "status": time.monotonic() + STATUS_EVERY_S}

    def run(self, stop: threading.Event) -> None:
        self.experiments.refresh()
        while not stop.is_set():
            polled = self.consumer.poll(timeout_ms=self.wait_ms, max_records=self.max_records)
            records = [r for batch in polled.values() for r in batch]
            if records:
                self.process(records)
            self.hooks.after_poll(self.consumer)
            self.tick()

    def process(self, records: Sequence[Record]) -> bool:
        """Apply, commit, evaluate one batch; False when it must be retried (Redis unavailable)."""
        started = time.monotonic()
        batch: list[Decoded] = [
            decode(self.kinds[r.topic], r.topic, r.partition, r.offset, r.value) for r in records
        ]
        running = self.experiments.experiments
        try:
            delta = self.state.apply(batch, running, self.clock(), self.evaluator.decider)
        except StoreUnavailableError as exc:
            log.warning(
                "state write failed; the batch will be read again", extra={"error": str(exc)}
            )
            self._rewind(records)
            time.sleep(RETRY_SLEEP_S)
            return False
        self.hooks.applied(delta, started)
        self._commit(records)
        if delta.touched:
            self._evaluate(delta.touched, running, delta.decisions)
        return True

    def tick(self) -> None:
        now = time.monotonic()
        due = self._due
        try:
            if now >= due["strategy"]:
                due["strategy"] = now + STRATEGY_EVERY_S
                self.experiments.refresh()
            if now >= due["gauges"]:
                due["gauges"] = now + GAUGES_EVERY_S
                self.hooks.swept(self.state.sweep(self.clock()))
                summary = self.state.summary()
                self.hooks.live(self.state.live(), summary.get("feedback.parked_now", 0))
            if now >= due["status"]:
                due["status"] = now + STATUS_EVERY_S
                exps = self.experiments.experiments
                verdicts = self._evaluate([e.id for e in exps.values()], exps)
                log.info(
                    "promoter status",
                    extra={
                        "summary": self.state.summary(),
                        "experiments": {v.experiment.id: v.decision.action for v in verdicts},
                    },
                )
        except StoreUnavailableError as exc:
            log.warning("periodic work skipped: Redis unavailable", extra={"error": str(exc)})

    def _evaluate(
        self, ids: Iterable[str], running: Mapping[str, Experiment], fresh: Collection[str] = ()
    ) -> list[Verdict]:
        try:
            return self.evaluator.evaluate(ids, running, fresh)
        except StoreUnavailableError as exc:  # decided at the next batch or status tick
            log.warning("evaluation skipped: Redis unavailable", extra={"error": str(exc)})
            return []

    def _commit(self, records: Sequence[Record]) -> None:
        try:
            self.consumer.commit(next_offsets(records))
        # e.g. a rebalance: the next owner replays, and the state drops it
        except kerrors.KafkaError as exc:
            log.warning("offset commit failed", extra={"error": repr(exc)})

    def _rewind(self, records: Sequence[Record]) -> None:
        rewind(self.consumer, records)
