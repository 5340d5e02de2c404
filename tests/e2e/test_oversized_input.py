"""An input record too big to forward to the DLQ does not stall its partition. The complaints topic
here takes records up to 2 MiB (``max.message.bytes``), the consumer's producer only 1 MiB: before
``DLQ_MAX_VALUE_BYTES``, the transaction failed on every retry. Now the real consumer dead-letters
the record without its value (``dlq.value.omitted``) and allocates the complaints behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from consumer.dlq import DLQ_MAX_VALUE_BYTES
from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan
from tests.flow import real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count

pytestmark = pytest.mark.e2e


def test_a_value_too_big_for_the_dlq_does_not_stall_its_partition(
    kafka_bootstrap: str, redis_url: str, unique: str, tiny_model: Path, tmp_path: Path
) -> None:
    env = topic_env(unique, kafka_bootstrap, redis_url, partitions=1)
    r = redis.Redis.from_url(redis_url)
    registry = Registry(r, env["ALLOCATOR_REDIS_PREFIX"])
    ref = registry.register(str(tiny_model)).ref
    StrategyStore(r, env["ALLOCATOR_REDIS_PREFIX"], registry).write(
        {t: TaskPlan("champion", ref) for t in ("team", "issue", "vulnerable")}, 0, "t", "test"
    )
    docs = real_complaints(5, split="test")
    topic = env["ALLOCATOR_TOPIC_COMPLAINTS"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        limit = {"max.message.bytes": str(2 * 1024 * 1024)}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=limit)])
    finally:
        admin.close()
    big = json.dumps({**docs[0], "text": "x" * (3 * DLQ_MAX_VALUE_BYTES // 2)}).encode()
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    producer.send(topic, key=b"big", value=big)
    for d in docs[1:]:
        producer.send(topic, key=d["complaint_id"].encode(), value=json.dumps(d).encode())
    producer.flush(30)
    producer.close()

    proc = Proc(["consume"], env, tmp_path / "consumer.log")
    try:
        outputs = [env["ALLOCATOR_TOPIC_ALLOCATIONS"], env["ALLOCATOR_TOPIC_DLQ"]]
        counts = wait_count(kafka_bootstrap, outputs, want=len(docs), timeout=90)
    finally:
        proc.stop()
    assert counts == {outputs[0]: len(docs) - 1, outputs[1]: 1}, counts
    (dead,) = read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_DLQ"], idle_ms=1000)
    headers = dict(dead.headers)
    assert dead.key == b"big" and dead.value is None
    assert headers["dlq.error.code"] == b"oversized"
    assert int(headers["dlq.value.omitted"]) == len(big)
    assert headers["dlq.source.offset"] == b"0"
