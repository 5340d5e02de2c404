"""Building blocks of the e2e tests: unique topic sets, consumer environments, real and malformed
inputs."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaProducer

from consumer.kafka import ensure_topics
from consumer.produce import Report, csv_complaints
from consumer.settings import CommonSettings
from trainer.paths import DEFAULT_DATA as DATA

# (value, expected DLQ reason) pairs; keys are "bad-<n>"
MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00 not utf-8", "not_utf8"),
    (b'{"schema": "complaint/v1", ', "not_json"),
    (b'["a list"]', "not_object"),
    (
        json.dumps({"schema": "complaint/v9", "complaint_id": "x", "text": "t"}).encode(),
        "unknown_schema",
    ),
    (
        json.dumps({"schema": "complaint/v1", "complaint_id": "x", "text": "   "}).encode(),
        "empty_text",
    ),
    (
        json.dumps({"schema": "complaint/v1", "complaint_id": "", "text": "hello"}).encode(),
        "schema_violation",
    ),
    (
        json.dumps({"schema": "complaint/v1", "complaint_id": "x", "text": "y" * 300_000}).encode(),
        "oversized",
    ),
]


def topic_env(unique: str, bootstrap: str, redis_url: str, partitions: int = 4) -> dict[str, str]:
    """Environment of consumers that use their own topics, group and Redis prefix; creates the
    topics."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "ALLOCATOR_TOPIC_COMPLAINTS": f"complaints-{unique}",
        "ALLOCATOR_TOPIC_ALLOCATIONS": f"allocations-{unique}",
        "ALLOCATOR_TOPIC_SHADOW": f"shadow-{unique}",
        "ALLOCATOR_TOPIC_DLQ": f"dlq-{unique}",
        "ALLOCATOR_TOPIC_FEEDBACK": f"feedback-{unique}",
        "ALLOCATOR_CONSUMER_GROUP": f"group-{unique}",
        "ALLOCATOR_REDIS_PREFIX": f"{unique}:",
        "ALLOCATOR_TOPIC_PARTITIONS": str(partitions),
        "ALLOCATOR_METRICS_PORT": "0",
        "ALLOCATOR_BATCH_MAX_MESSAGES": "32",
        "ALLOCATOR_ORT_THREADS": "1",
        "ALLOCATOR_STRATEGY_POLL_S": "0.5",
        "ALLOCATOR_TRANSACTION_TIMEOUT_MS": "10000",
    }
    s = CommonSettings(kafka_bootstrap_servers=bootstrap, topic_partitions=partitions)
    ensure_topics(
        s,
        [
            env[k]
            for k in env
            if k.startswith("ALLOCATOR_TOPIC_") and k != "ALLOCATOR_TOPIC_PARTITIONS"
        ],
    )
    return env


def real_complaints(n: int, split: str = "test") -> list[dict[str, Any]]:
    return list(itertools.islice(csv_complaints(DATA, Report(), split), n))


class Feeder(threading.Thread):
    """Sends documents (and raw malformed values) at ``rate`` per second in the background."""

    def __init__(
        self, bootstrap: str, topic: str, items: list[tuple[bytes, bytes]], rate: float
    ) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.topic = topic
        self.items = items
        self.rate = rate
        self.sent = 0

    def run(self) -> None:
        start = time.monotonic()
        for key, value in self.items:
            delay = start + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.producer.send(self.topic, key=key, value=value)
            self.sent += 1
        self.producer.flush()
        self.producer.close()


def mixed_inputs(docs: list[dict[str, Any]], every: int = 50) -> Iterator[tuple[bytes, bytes]]:
    """Real complaints with a malformed record after every ``every`` of them."""
    bad = itertools.cycle(enumerate(MALFORMED))
    n = 0
    for i, doc in enumerate(docs):
        yield doc["complaint_id"].encode(), json.dumps(doc).encode()
        if i % every == every - 1:
            k, (value, _) = next(bad)
            yield f"bad-{n}-{k}".encode(), value
            n += 1
