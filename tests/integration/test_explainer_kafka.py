"""The explainer's Kafka side on a real broker: records by coordinates (410 below the log start),
the index of committed allocations, and the one-shot CLI against a real Redis registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from consumer.contracts.messages import Complaint, dump
from consumer.package import load_package
from consumer.registry import Registry
from consumer.settings import CommonSettings
from explainer.__main__ import main
from explainer.errors import DecisionNotFoundError, InputGoneError
from explainer.index import AllocationIndexer, DecisionIndex
from explainer.sources import KafkaRecords, MemoryRecords
from explainer.testing import decide
from tests.tiny_packages import tiny_package

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("models"), 0)


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for v in values:
            producer.send(topic, value=v, partition=partition)
        producer.flush()
    finally:
        producer.close()


def test_records_by_coordinates_and_input_gone_below_log_start(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("explain-src")
    _produce(kafka_bootstrap, topic, [b"zero", b"one", b"two"])
    records = KafkaRecords(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap), timeout_s=10)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert records.read(topic, 0, 1) == b"one"
        assert records.read(topic, 0, 0) == b"zero"
        with pytest.raises(DecisionNotFoundError, match="no record"):
            records.read(topic, 0, 3)
        with pytest.raises(InputGoneError, match="no longer exists"):
            records.read(topic, 7, 0)
        with pytest.raises(InputGoneError, match="no longer exists"):
            records.read(f"{topic}-never-created", 0, 0)
        admin.delete_records({TopicPartition(topic, 0): 2})  # what retention does to old segments
        with pytest.raises(InputGoneError, match="no longer retained"):
            records.read(topic, 0, 1)
        assert records.read(topic, 0, 2) == b"two"
    finally:
        admin.close()
        records.close()


def test_indexer_indexes_committed_allocations_only(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("explain-alloc", partitions=2)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"t-{topic}", acks="all"
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(4):
            producer.send(
                topic, value=json.dumps({"decision_id": f"d{i}"}).encode(), partition=i % 2
            )
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic, value=json.dumps({"decision_id": "aborted"}).encode(), partition=0)
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()
    _produce(
        kafka_bootstrap,
        topic,
        [b"not json", json.dumps({"decision_id": "plain"}).encode()],
        partition=1,
    )
    index = DecisionIndex()
    indexer = AllocationIndexer(
        CommonSettings(kafka_bootstrap_servers=kafka_bootstrap), topic, index, poll_ms=200
    )
    try:
        assert indexer.catch_up(30)
        assert all(index.get(f"d{i}") is not None for i in range(4))
        assert index.get("plain") == (1, 4), "after d1, d3, a commit marker and the junk record"
        assert index.get("aborted") is None, (
            "read_committed: an aborted allocation is never indexed"
        )
        assert indexer.skipped == 1
    finally:
        indexer.close()

    index2 = DecisionIndex()
    follower = AllocationIndexer(
        CommonSettings(kafka_bootstrap_servers=kafka_bootstrap), topic, index2, poll_ms=200
    )
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while not follower.caught_up and time.monotonic() < deadline:
            time.sleep(0.1)
        _produce(kafka_bootstrap, topic, [json.dumps({"decision_id": "late"}).encode()])
        while index2.get("late") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert index2.get("late") is not None and follower.alive()
    finally:
        follower.stop()


def test_one_shot_cli_with_a_record_and_text_file(
    tiny: Path,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        Registry(client, redis_prefix).register(str(tiny))
    finally:
        client.close()
    text = (
        "I am a veteran and my student loan servicer put me in forbearance without asking me first."
    )
    allocation = decide(
        load_package(tiny), Complaint(complaint_id="c-9", text=text), MemoryRecords()
    )
    (tmp_path / "alloc.json").write_bytes(dump(allocation))
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    for key, value in {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "ALLOCATOR_REDIS_PREFIX": redis_prefix,
        "ALLOCATOR_EXPLAINER_MAX_EVALS": "60",
        "ALLOCATOR_SECRETS_DIR": str(tmp_path / "no-secrets"),
    }.items():
        monkeypatch.setenv(key, value)
    args = [
        allocation.decision_id,
        "--allocation",
        str(tmp_path / "alloc.json"),
        "--text-file",
        str(tmp_path / "text.txt"),
    ]
    assert (
        main(
            [*args, "--task", "vulnerable", "--label", "yes", "--html", str(tmp_path / "out.html")]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert (doc["task"], doc["label"], doc["text_from"]) == ("vulnerable", "yes", "request")
    assert doc["additivity"]["ok"] and doc["explainer"]["max_evals"] == 60
    assert 'id="highlighted"' in (tmp_path / "out.html").read_text()
    (tmp_path / "text.txt").write_text(text + "\n", encoding="utf-8")
    assert main(args) == 2
    assert "sha256 of the given text" in capsys.readouterr().err
    assert main(["f" * 32, "--allocation", str(tmp_path / "alloc.json")]) == 2
    assert "not " + "f" * 32 in capsys.readouterr().err
