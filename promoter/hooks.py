"""Small hooks the promoter loop calls; they turn its events into metrics (as ``consumer.hooks``
does).

Counters move only after the batch's transaction committed (so a retried batch is not counted twice
in this process); the ratio gauges are recomputed from the counters kept in Redis, so they survive a
restart and agree between replicas.
"""

from __future__ import annotations

import time
from typing import Any

from consumer.kafka import lag as kafka_lag
from consumer.metrics import PromoterMetrics
from promoter.evaluate import Verdict
from promoter.experiments import Experiment
from promoter.join import Delta, live_table

# the outcomes of feedback that end its story (``parked`` is a waiting state, counted in
# records_total)
FEEDBACK_OUTCOMES = ("joined", "late", "duplicate", "malformed", "unknown")


class PromoterHooks:
    def __init__(self, metrics: PromoterMetrics, lag_every_s: float = 2.0) -> None:
        self.m = metrics
        self._lag_every_s = lag_every_s
        self._lag_at = 0.0
        self.last_beat = time.monotonic()
        # partitions owned, as the loop last saw them (the consumer is not thread-safe)
        self.assigned = 0

    def applied(self, delta: Delta, started: float) -> None:
        m = self.m
        for name, n in delta.summary.items():
            kind, _, outcome = name.partition(".")
            m.records.labels(kind, outcome).inc(n)
            if kind == "feedback" and outcome in FEEDBACK_OUTCOMES:
                m.feedback.labels(outcome).inc(n)
        for (task, version, arm, correct), n in delta.outcomes.items():
            m.outcomes.labels(task, version, arm, correct).inc(n)
        for d in delta.delays:
            m.label_delay.observe(d)
        m.batch_seconds.observe(time.monotonic() - started)

    def swept(self, unknown: int) -> None:
        if unknown:
            self.m.feedback.labels("unknown").inc(unknown)

    def live(self, counters: dict[str, int], parked: int) -> None:
        """Set the accuracy and recall gauges from the live counters in Redis, each with the count
        it rests on (labelled predictions, vulnerable customers): alerts judge only on enough."""
        m = self.m
        m.parked.set(parked)
        table = live_table(counters)
        for row in table["accuracy"]:
            acc = (row["task"], _version(row["model"]), row["arm"])
            m.accuracy.labels(*acc).set(row["accuracy"])
            m.accuracy_labels.labels(*acc).set(row["n"])
        for row in table["automated"]:
            sel = (row["task"], _version(row["model"]), row["arm"])
            m.coverage.labels(*sel).set(row["coverage"])
            m.automated_labels.labels(*sel).set(row["automated"])
            if row["accuracy"] is not None:
                m.automated_accuracy.labels(*sel).set(row["accuracy"])
        for row in table["vulnerable_recall"]:
            rec = (_version(row["model"]), row["arm"])
            m.vulnerable_recall.labels(*rec).set(row["recall"])
            m.vulnerable_positives.labels(*rec).set(row["positives"])

    def verdict(self, v: Verdict) -> None:
        exp, e = v.experiment, v.decision.evidence
        for test in ("better", "worse", "recall_worse"):
            self.m.p_value.labels(exp.task, exp.mode, test).set(e[f"p_{test}"])
        self.m.experiment_labels.labels(exp.task, exp.mode, "champion").set(v.counts.champion.n)
        self.m.experiment_labels.labels(exp.task, exp.mode, "challenger").set(v.counts.challenger.n)

    def decision(self, exp: Experiment, action: str, applied: bool) -> None:
        self.m.decisions.labels(exp.task, action, str(applied).lower()).inc()

    def after_poll(self, consumer: Any) -> None:
        """Lag over the owned partitions, at most every ``lag_every_s`` (highwater marks: no
        I/O)."""
        now = self.last_beat = time.monotonic()
        if now - self._lag_at < self._lag_every_s:
            return
        self._lag_at = now
        self.assigned, behind = kafka_lag(consumer)
        self.m.lag.set(behind)


def _version(model: str) -> str:
    return model.rpartition("@")[2]
