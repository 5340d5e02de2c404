"""The hot loop's branches on the in-memory Kafka double: commit, a bad record, a model failure on
one record, abort and retry, a failed abort, fencing, no model yet, and stop.

Each test checks the two things exactly-once rests on: what a ``read_committed`` reader sees, and
where the group's offsets are.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import errors as kerrors
from prometheus_client import CollectorRegistry

from consumer.breaker import Breaker, BreakerConfig
from consumer.errors import BrokerError, InferenceError
from consumer.hooks import LoopHooks
from consumer.kafka_memory import MemoryBroker, MemoryConsumer, MemoryProducer
from consumer.loop import Loop, Topics
from consumer.metrics import ConsumerMetrics
from consumer.plan import Plan
from tests.unit.test_router import TEXTS, plan_for

GROUP = "allocator"
TOPICS = Topics(allocations="allocations", shadow="shadow", dlq="dlq")


def complaint(i: int, text: str | None = None) -> bytes:
    doc = {"schema": "complaint/v1", "complaint_id": f"c{i}", "text": text or TEXTS[i % 3]}
    return json.dumps(doc).encode()


class Rig:
    """A broker with the loop's topics, one loop over it, and the loop's metrics."""

    def __init__(
        self,
        plan: Callable[[], Plan | None],
        partitions: int = 2,
        breaker: Breaker | None = None,
    ) -> None:
        self.broker = MemoryBroker()
        self.broker.create("complaints", partitions)
        for topic in ("allocations", "shadow", "dlq"):
            self.broker.create(topic)
        self.producer = MemoryProducer(self.broker)
        self.registry = CollectorRegistry()
        self.hooks = LoopHooks(ConsumerMetrics(self.registry), lag_every_s=0.0)
        self.plan = plan
        self.breaker = breaker or Breaker(BreakerConfig(0.5, 10, 200, 300.0))
        self.consumer: MemoryConsumer | None = None

    def feed(self, values: list[bytes | None]) -> None:
        for i, value in enumerate(values):
            self.broker.append("complaints", value, key=f"c{i}".encode())

    def loop(self) -> Loop:
        self.consumer = MemoryConsumer(self.broker, ["complaints"], GROUP)
        return Loop(
            self.consumer,  # type: ignore[arg-type]  # the double has the surface the loop uses
            self.producer,  # type: ignore[arg-type]
            self.plan,
            TOPICS,
            self.hooks,
            max_records=100,
            wait_ms=1,
            max_bytes=1_000_000,
            max_text_chars=100_000,
            breaker=self.breaker,
        )

    def step(self, loop: Loop) -> int:
        """Poll once and process what came; returns how many records."""
        assert self.consumer is not None
        records = [r for batch in self.consumer.poll(max_records=100).values() for r in batch]
        if records:
            loop.process(records)
        return len(records)

    def ids(self, topic: str) -> list[str]:
        return sorted(
            json.loads(r.value or b"{}")["complaint_id"] for r in self.broker.records(topic)
        )

    def committed(self) -> dict[int, int | None]:
        return {
            tp.partition: self.broker.committed_offset(GROUP, "complaints", tp.partition)
            for tp in self.broker.partitions("complaints")
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
def plan(tiny: Path, tiny2: Path) -> Plan:
    return plan_for(tiny, tiny2)


def test_a_batch_commits_its_allocations_with_its_offsets(plan: Plan) -> None:
    rig = Rig(lambda: plan)
    rig.feed([complaint(i) for i in range(6)])
    loop = rig.loop()
    assert rig.step(loop) == 6
    assert rig.ids("allocations") == [f"c{i}" for i in range(6)]
    per_partition = [len(rig.broker.logs[tp]) for tp in rig.broker.partitions("complaints")]
    assert rig.committed() == dict(enumerate(per_partition))  # one past each partition's last
    assert rig.producer.calls[-2:] == ["send_offsets", "commit"]
    assert rig.metric("allocator_transactions_total", outcome="committed") == 1
    assert rig.metric("allocator_messages_consumed_total") == 6


def test_a_bad_record_goes_to_the_dlq_with_its_reason_and_the_rest_is_allocated(plan: Plan) -> None:
    rig = Rig(lambda: plan, partitions=1)
    rig.feed([complaint(0), b"not json", complaint(2), None])
    rig.step(rig.loop())
    assert rig.ids("allocations") == ["c0", "c2"]
    dead = rig.broker.records("dlq")
    assert [r.value for r in dead] == [b"not json", None]  # the record unchanged
    headers = dict(dead[0].headers)
    assert headers["dlq.error.code"] == b"not_json"
    assert headers["dlq.source.offset"] == b"1"
    assert dead[0].key == b"c1"
    assert rig.committed() == {0: 4}
    assert rig.metric("allocator_dlq_total", reason="not_json") == 2


def test_a_model_failure_on_one_record_dead_letters_that_record_only(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = next(iter(plan.models.values()))
    real = model.run
    poison = len(next(iter(plan.encoders.values())).encode([TEXTS[2]])[0].ids)

    def flaky(encoded: list[Any]) -> Any:
        if any(len(e.ids) == poison for e in encoded):
            raise InferenceError("boom")
        return real(encoded)

    monkeypatch.setattr(model, "run", flaky)
    rig = Rig(lambda: plan, partitions=1)
    rig.feed([complaint(i) for i in range(6)])  # c2 and c5 carry TEXTS[2]
    rig.step(rig.loop())
    assert rig.ids("allocations") == ["c0", "c1", "c3", "c4"]
    codes = [dict(r.headers)["dlq.error.code"] for r in rig.broker.records("dlq")]
    assert codes == [b"model_failure", b"model_failure"]
    assert rig.committed() == {0: 6}


@pytest.mark.parametrize("step", ["send", "send_offsets", "commit"])
def test_a_failed_transaction_is_aborted_rewound_and_retried_exactly_once(
    plan: Plan, step: Any
) -> None:
    rig = Rig(lambda: plan)
    rig.feed([complaint(i) for i in range(5)])
    loop = rig.loop()
    rig.producer.fail(step, kerrors.KafkaTimeoutError("broker away"))
    assert rig.step(loop) == 5
    assert rig.broker.records("allocations") == []  # nothing of the aborted batch is visible
    assert rig.committed() == {0: None, 1: None}
    assert "abort" in rig.producer.calls and not rig.producer.in_transaction
    assert rig.metric("allocator_transactions_total", outcome="aborted") == 1
    assert rig.step(loop) == 5  # rewound: the same records come back
    assert rig.ids("allocations") == [f"c{i}" for i in range(5)]  # each once
    assert rig.step(loop) == 0


def test_a_failed_abort_is_fatal(plan: Plan) -> None:
    rig = Rig(lambda: plan)
    rig.feed([complaint(0)])
    rig.producer.fail("commit", kerrors.KafkaTimeoutError("broker away"))
    rig.producer.fail("abort", kerrors.KafkaTimeoutError("still away"))
    with pytest.raises(BrokerError, match="abort failed"):
        rig.step(rig.loop())
    assert rig.broker.records("allocations") == []


def test_a_fenced_producer_stops_the_loop_and_commits_nothing(plan: Plan) -> None:
    rig = Rig(lambda: plan)
    rig.feed([complaint(i) for i in range(3)])
    rig.producer.fail("send_offsets", kerrors.ProducerFencedError())
    with pytest.raises(kerrors.ProducerFencedError):
        rig.step(rig.loop())
    assert "abort" not in rig.producer.calls  # the newer instance cleans up, not us
    assert rig.committed() == {0: None, 1: None}
    # a restarted pod (same group) reads the batch again and allocates it once
    rig.producer = MemoryProducer(rig.broker)
    loop = rig.loop()
    assert rig.step(loop) == 3
    assert rig.ids("allocations") == ["c0", "c1", "c2"]


def test_without_a_model_the_batch_is_rewound_not_lost(plan: Plan) -> None:
    current: list[Plan | None] = [None]
    rig = Rig(lambda: current[0])
    rig.feed([complaint(i) for i in range(4)])
    loop = rig.loop()
    assert rig.step(loop) == 4
    assert rig.producer.calls == [] and rig.committed() == {0: None, 1: None}
    current[0] = plan  # a strategy arrives
    assert rig.step(loop) == 4
    assert rig.ids("allocations") == [f"c{i}" for i in range(4)]


def test_run_finishes_the_batch_in_hand_then_returns_on_stop(plan: Plan) -> None:
    rig = Rig(lambda: plan)
    rig.feed([complaint(i) for i in range(4)])
    loop = rig.loop()
    stop = threading.Event()
    original = loop.process

    def process_then_stop(records: Any) -> None:
        stop.set()  # SIGTERM arrives mid-batch
        original(records)

    loop.process = process_then_stop  # type: ignore[method-assign]
    loop.run(stop)
    assert rig.ids("allocations") == [f"c{i}" for i in range(4)]
    assert rig.consumer is not None and rig.consumer.polls == 1
    assert rig.metric("allocator_assigned_partitions") == 2  # after_poll ran


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model of ``plan`` fails on every record, as a graph that breaks at run time does."""

    def broken(encoded: list[Any]) -> Any:
        raise InferenceError("graph failed at run time")

    for model in plan.models.values():
        monkeypatch.setattr(model, "run", broken)


def test_the_breaker_holds_the_input_instead_of_dead_lettering_it(
    plan: Plan, tiny: Path, tiny2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = [plan]
    rig = Rig(lambda: current[0])
    rig.feed([complaint(i) for i in range(12)])
    failing(plan, monkeypatch)
    loop = rig.loop()
    loop.turn()
    assert rig.breaker.state == "open"
    assert rig.broker.records("dlq") == [] and rig.broker.records("allocations") == []
    assert rig.committed() == {0: None, 1: None}
    assert rig.metric("allocator_circuit_breaker_open") == 1
    assert rig.metric("allocator_circuit_breaker_trips_total") == 1
    assert rig.hooks.breaker_open and "failed on 12 of the last 12" in rig.breaker.reason
    assert rig.consumer is not None
    for _ in range(3):  # held: partitions paused, still polled (group membership), nothing read
        loop.turn()
    assert rig.consumer.paused() == rig.consumer.assignment()
    assert rig.producer.calls == []
    current[0] = plan_for(tiny, tiny2)  # the fix: a new plan (a rollback, a strategy change)
    loop.turn()
    assert rig.breaker.state == "closed" and rig.metric("allocator_circuit_breaker_open") == 0
    assert rig.consumer.paused() == set()
    assert rig.ids("allocations") == sorted(f"c{i}" for i in range(12))  # each once, none lost
    assert rig.broker.records("dlq") == []
    assert rig.metric("allocator_circuit_breaker_trips_total") == 1


def test_after_the_cooldown_a_trial_batch_reopens_or_closes_the_breaker(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    rig = Rig(lambda: plan, breaker=Breaker(BreakerConfig(0.5, 10, 200, 60.0), clock))
    rig.feed([complaint(i) for i in range(12)])
    with monkeypatch.context() as broken:
        failing(plan, broken)
        loop = rig.loop()
        loop.turn()
        assert rig.breaker.state == "open"
        clock.now = 59.0
        loop.turn()
        assert rig.breaker.holding and rig.producer.calls == []
        clock.now = 61.0  # trial on the same plan, still failing: open again, nothing sent
        loop.turn()
        assert rig.breaker.state == "open" and rig.broker.records("dlq") == []
    clock.now = 200.0  # the fault was transient: the trial batch commits and closes it
    loop.turn()
    assert rig.breaker.state == "closed"
    assert rig.ids("allocations") == sorted(f"c{i}" for i in range(12))
    assert rig.metric("allocator_circuit_breaker_trips_total") == 1


def test_bad_input_never_trips_the_breaker(plan: Plan) -> None:
    rig = Rig(lambda: plan)
    rig.feed([b"not json"] * 20 + [complaint(1)])
    rig.loop().turn()
    assert rig.breaker.state == "closed"
    assert len(rig.broker.records("dlq")) == 20 and rig.ids("allocations") == ["c1"]
