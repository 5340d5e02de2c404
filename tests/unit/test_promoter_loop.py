"""The promoter loop with an in-memory consumer: state before offsets, a Redis outage loses nothing,
metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NamedTuple

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from consumer.metrics import PromoterMetrics
from consumer.registry import Registry
from consumer.store import StrategyStore
from promoter.evaluate import Evaluator, Policy
from promoter.hooks import PromoterHooks
from promoter.loop import PromoterLoop, RunningExperiments
from promoter.records import Kind
from promoter.state import JoinStore
from promoter.synthetic import Simulator, Skill, encode, feedback
from tests.unit.test_promoter_join import LABELS, NOW, T0, TTL, strategy, truth

KINDS: dict[str, Kind] = {"allocations": "allocation", "feedback": "feedback"}


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    """The part of KafkaConsumer the loop uses."""

    def __init__(self) -> None:
        self.committed: dict[Any, Any] = {}
        self.seeks: list[tuple[Any, int]] = []
        self.parts: set[Any] = set()

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed.update(offsets)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[Any]:
        return self.parts

    def highwater(self, tp: Any) -> int | None:
        return None


@pytest.fixture
def setup() -> Iterator[tuple[PromoterLoop, FakeConsumer, fakeredis.FakeServer, CollectorRegistry]]:
    from kafka import TopicPartition

    server = fakeredis.FakeServer()
    r = fakeredis.FakeRedis(server=server)
    registry = CollectorRegistry()
    hooks = PromoterHooks(PromoterMetrics(registry))
    strategies = StrategyStore(r, "t:", Registry(r, "t:"))
    evaluator = Evaluator(r, "t:", strategies, Policy(), hooks.verdict, hooks.decision)
    consumer = FakeConsumer()
    consumer.parts = {TopicPartition(t, 0) for t in KINDS}
    loop = PromoterLoop(
        consumer, KINDS, JoinStore(r, "t:", TTL), RunningExperiments(strategies), evaluator, hooks
    )
    loop.clock = lambda: NOW
    yield loop, consumer, server, registry
    r.close()


def records(n: int) -> list[Rec]:
    sim = Simulator(strategy(), {"m@1": Skill(1.0)}, LABELS)
    out = []
    for i in range(n):
        alloc, _ = sim.allocate(truth(i), T0)
        out.append(Rec("allocations", 0, i, encode(alloc)))
        out.append(Rec("feedback", 0, i, encode(feedback(truth(i), T0 + timedelta(minutes=5)))))
    out.append(Rec("feedback", 0, n, b"not json"))
    return out


def test_a_redis_outage_rewinds_the_batch_and_commits_nothing(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, consumer, server, registry = setup
    batch = records(3)
    monkeypatch.setattr("promoter.loop.RETRY_SLEEP_S", 0.0)
    server.connected = False
    assert loop.process(batch) is False
    assert not consumer.committed
    assert sorted((tp.topic, o) for tp, o in consumer.seeks) == [
        ("allocations", 0),
        ("feedback", 0),
    ]
    server.connected = True
    assert loop.process(batch) is True
    assert {tp.topic: om.offset for tp, om in consumer.committed.items()} == {
        "allocations": 3,
        "feedback": 4,
    }
    assert registry.get_sample_value("allocator_feedback_total", {"outcome": "joined"}) == 3
    assert registry.get_sample_value("allocator_feedback_total", {"outcome": "malformed"}) == 1
    assert registry.get_sample_value("allocator_label_delay_seconds_count") == 3
    outcome = {"task": "team", "model_version": "1", "arm": "champion", "correct": "true"}
    assert registry.get_sample_value("allocator_live_outcomes_total", outcome) == 3


def test_the_periodic_tick_sets_gauges_and_counts_unknown_feedback(setup: Any) -> None:
    loop, _, _, registry = setup
    loop.process([Rec("feedback", 0, 0, encode(feedback(truth(9), T0))), *records(2)])
    loop.tick()
    labels = {"task": "issue", "model_version": "1", "arm": "champion"}
    assert registry.get_sample_value("allocator_live_accuracy_ratio", labels) == 1.0
    assert registry.get_sample_value("allocator_promoter_parked_feedback") == 1
    loop.clock = lambda: NOW + TTL + 1
    loop._due["gauges"] = 0.0
    loop.tick()
    assert registry.get_sample_value("allocator_feedback_total", {"outcome": "unknown"}) == 1
    assert registry.get_sample_value("allocator_promoter_parked_feedback") == 0
