"""The circuit breaker on the real stack: a package that passes its digest check but whose graph
fails at run time holds the input (nothing dead-lettered, nothing committed, readiness false, the
breaker metric 1); a strategy naming a good model resumes the flow and every complaint is allocated
exactly once."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan
from tests.flow import real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count
from tests.tiny_packages import with_failing_graph

pytestmark = pytest.mark.e2e
TASKS = ("team", "issue", "vulnerable")
N = 120


def gauge(proc: Proc, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", proc.metrics(), re.M)
    return float(m.group(1)) if m else -1.0


def readyz(proc: Proc) -> tuple[int, str]:
    port = proc.wait_log("consuming")["metrics_port"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s")


def test_a_graph_that_fails_at_run_time_holds_the_input_until_a_good_plan(
    kafka_bootstrap: str, redis_url: str, unique: str, tiny_model: Path, tmp_path: Path
) -> None:
    env = {
        **topic_env(unique, kafka_bootstrap, redis_url, partitions=2),
        "ALLOCATOR_BREAKER_MIN_RECORDS": "10",
        "ALLOCATOR_BREAKER_COOLDOWN_S": "600",  # only the new plan may close it here
    }
    r = redis.Redis.from_url(redis_url)
    registry = Registry(r, env["ALLOCATOR_REDIS_PREFIX"])
    store = StrategyStore(r, env["ALLOCATOR_REDIS_PREFIX"], registry)
    good = registry.register(str(tiny_model)).ref
    broken = registry.register(str(with_failing_graph(tiny_model, tmp_path / "broken"))).ref
    store.write({t: TaskPlan("champion", broken) for t in TASKS}, 0, "a bad release", "test")

    docs = real_complaints(N, split="test")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for d in docs:
        producer.send(
            env["ALLOCATOR_TOPIC_COMPLAINTS"],
            key=d["complaint_id"].encode(),
            value=json.dumps(d).encode(),
        )
    producer.flush(30)
    producer.close()

    proc = Proc(["consume"], env, tmp_path / "consumer.log")
    try:
        until(lambda: gauge(proc, "allocator_circuit_breaker_open") == 1, 60, "breaker open")
        status, body = readyz(proc)
        assert status == 503 and "circuit breaker open" in body, body
        assert gauge(proc, "allocator_circuit_breaker_trips_total") == 1
        time.sleep(3)  # held: several polls later, still nothing out
        outputs = [env["ALLOCATOR_TOPIC_ALLOCATIONS"], env["ALLOCATOR_TOPIC_DLQ"]]
        assert wait_count(kafka_bootstrap, outputs, want=1, timeout=2) == dict.fromkeys(outputs, 0)

        store.write({t: TaskPlan("champion", good) for t in TASKS}, 1, "rollback", "test")
        until(lambda: gauge(proc, "allocator_circuit_breaker_open") == 0, 30, "breaker closed")
        counts = wait_count(kafka_bootstrap, outputs, want=N, timeout=90)
        assert counts[env["ALLOCATOR_TOPIC_ALLOCATIONS"]] == N, counts
        assert readyz(proc)[0] == 200
    finally:
        proc.stop()
    allocations = read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
    ids = Counter(json.loads(a.value)["complaint_id"] for a in allocations)
    assert set(ids) == {d["complaint_id"] for d in docs} and set(ids.values()) == {1}
    served = {
        f"{p['model']['name']}@{p['model']['version']}"
        for a in allocations
        for p in json.loads(a.value)["predictions"].values()
    }
    assert served == {good}  # the broken model decided nothing
    assert read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_DLQ"], idle_ms=1000) == []
