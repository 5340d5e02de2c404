"""``allocator replay`` on the real stack: the real consumer allocates complaints with one model,
a replay with another model writes allocation/v1 records with replay headers into a fresh topic
and reports its agreement with what was published (joined on decision_id); a replay with the
published model agrees on everything; the allocations topic is refused; and ``allocator promoter
evaluate`` scores the replay against feedback the promoter has joined."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer

from consumer import strategy as transitions
from consumer.contracts import schemas
from consumer.contracts.messages import Feedback, dump
from consumer.registry import Registry
from consumer.store import StrategyStore
from promoter.records import decode
from promoter.state import JoinStore
from tests.flow import MALFORMED, real_complaints, topic_env
from tests.procs import Proc, read_all, run_cli, wait_count
from tests.tiny_packages import tiny_package

pytestmark = pytest.mark.integration

N = 24
TASKS = ("issue", "team", "vulnerable")


allocator = run_cli


def where(doc: dict[str, Any]) -> tuple[int, int]:
    return doc["source"]["partition"], doc["source"]["offset"]


def test_replay_with_another_model_reports_agreement_and_feeds_the_promoter(
    kafka_bootstrap: str,
    redis_url: str,
    unique: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = topic_env(unique, kafka_bootstrap, redis_url, partitions=2)
    prefix = env["ALLOCATOR_REDIS_PREFIX"]
    complaints, published_topic = (
        env["ALLOCATOR_TOPIC_COMPLAINTS"],
        env["ALLOCATOR_TOPIC_ALLOCATIONS"],
    )
    replay_topic, same_topic = f"replay-{unique}", f"replay-same-{unique}"
    client = redis.Redis.from_url(redis_url)
    try:
        registry = Registry(client, prefix)
        models = tmp_path_factory.mktemp("models")
        a = registry.register(str(tiny_package(models, 0))).ref
        b = registry.register(str(tiny_package(models, 1))).ref
        StrategyStore(client, prefix, registry).update(
            lambda cur: transitions.champion(cur, a, TASKS), "test", "test"
        )
        docs = real_complaints(N)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for d in docs:
                producer.send(
                    complaints, key=d["complaint_id"].encode(), value=json.dumps(d).encode()
                )
            for k, (value, _) in enumerate(MALFORMED[:2]):  # not UTF-8, not JSON: dead-lettered
                producer.send(complaints, key=f"bad-{k}".encode(), value=value)
            producer.flush()
        finally:
            producer.close()

        consumer = Proc(["consume"], env, tmp_path / "consumer.log")
        try:
            consumer.wait_log("consuming", timeout=120)
            counts = wait_count(
                kafka_bootstrap, [published_topic, env["ALLOCATOR_TOPIC_DLQ"]], N + 2, timeout=180
            )
            assert counts == {published_topic: N, env["ALLOCATOR_TOPIC_DLQ"]: 2}, counts
        finally:
            consumer.signal(signal.SIGTERM)
            consumer.wait(30)
        published = {
            where(d): d
            for d in (json.loads(r.value) for r in read_all(kafka_bootstrap, published_topic))
        }

        # another model, into a fresh topic and a JSON lines file
        jsonl = tmp_path / "replay.jsonl"
        done = allocator(
            env, "replay", "--model", b, "--to", replay_topic, "--jsonl", str(jsonl), "--json"
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["read"], report["replayed"], report["published_found"]) == (N + 2, N, N)
        assert report["undecodable"] == {"not_utf8": 1, "not_json": 1}
        assert report["model_failures"] == 0 and report["of"] == f"model:{b}"
        assert not any(d["text"][:40] in done.stdout for d in docs), "never the complaint text"

        records = read_all(kafka_bootstrap, replay_topic)
        assert len(records) == N
        replayed = [json.loads(r.value) for r in records]
        for rec, doc in zip(records, replayed, strict=True):
            headers = {k: v.decode() for k, v in rec.headers}
            assert schemas.errors("allocation/v1", doc) == []
            assert schemas.errors("replay-headers/v1", headers) == []
            assert (
                headers["replay.id"] == report["replay_id"] and headers["replay.of"] == f"model:{b}"
            )
            source = (int(headers["replay.source.partition"]), int(headers["replay.source.offset"]))
            assert headers["replay.source.topic"] == complaints and source == where(doc)
            live = published[source]
            assert doc["decision_id"] == live["decision_id"], "same input record, same decision id"
            assert (
                doc["complaint_id"] == live["complaint_id"]
                and rec.key == live["complaint_id"].encode()
            )
            assert {p["model"]["version"] for p in doc["predictions"].values()} == {b.split("@")[1]}
        for task in TASKS:
            agreed = sum(
                d["predictions"][task]["label"] == published[where(d)]["predictions"][task]["label"]
                for d in replayed
            )
            row = report["tasks"][task]
            assert (row["replayed"], row["published"], row["agreed"]) == (N, N, agreed), row
        assert sorted(
            json.loads(line)["decision_id"] for line in jsonl.read_text().splitlines()
        ) == sorted(d["decision_id"] for d in replayed)

        # the published model agrees with itself everywhere; the case system's topic is refused
        same = allocator(env, "replay", "--model", a, "--to", same_topic, "--json")
        assert same.returncode == 0, same.stderr
        assert all(t["agreement"] == 1.0 for t in json.loads(same.stdout)["tasks"].values())
        refused = allocator(env, "replay", "--model", b, "--to", published_topic)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "refusing to write a replay into" in refused.stderr

        # the promoter joined feedback on the published allocations; it scores the replay on it
        at = datetime.now(UTC)
        batch, truth = [], {}
        for i, live in enumerate(sorted(published.values(), key=where)):
            truth[live["decision_id"]] = live["team"] if i % 2 else "someone_else"
            fb = Feedback(
                complaint_id=live["complaint_id"],
                decision_id=live["decision_id"],
                team=truth[live["decision_id"]],
                issue=live["issue"],
                vulnerable=bool(i % 3 == 0),
                decided_at=at + timedelta(hours=1),
            )
            batch.append(decode("allocation", "a", 0, i, json.dumps(live).encode()))
            batch.append(decode("feedback", "f", 0, i, dump(fb)))
        JoinStore(client, prefix, 86_400).apply(batch, {}, at.timestamp())
        evaluated = allocator(env, "promoter", "evaluate", "--replay-topic", replay_topic, "--json")
        assert evaluated.returncode == 0, evaluated.stderr
        e = json.loads(evaluated.stdout)
        assert e["labelled"] == N and e["replay_ids"] == {report["replay_id"]: N}
        team = e["tasks"]["team"]
        assert team["n"] == N and team["published_correct"] == N // 2
        assert team["replay_correct"] == sum(d["team"] == truth[d["decision_id"]] for d in replayed)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            mine = [t for t in admin.list_topics() if t.endswith(unique)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
