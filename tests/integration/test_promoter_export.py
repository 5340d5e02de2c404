"""``allocator promoter export`` on a real broker: text fetched by source coordinates, checked by
digest, and rows whose input is gone (retention) or changed counted and skipped; the trainer reads
the file as written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from consumer.strategy import parse
from promoter.records import Decoded, decode
from promoter.state import JoinStore
from promoter.synthetic import Simulator, Skill, Truth, encode, feedback
from tests.flow import real_complaints, topic_env

pytestmark = pytest.mark.integration

HEADS = {"m@1": {"team": {}, "issue": {}, "vulnerable": {}}}
LABELS = {"team": ["banking", "cards"], "issue": ["fees", "other"], "vulnerable": ["no", "yes"]}


def test_export_writes_what_the_trainer_reads(
    kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    env = topic_env(unique, kafka_bootstrap, redis_url, partitions=1)
    topic, prefix = env["ALLOCATOR_TOPIC_COMPLAINTS"], env["ALLOCATOR_REDIS_PREFIX"]
    docs = real_complaints(40)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        meta = [
            producer.send(topic, key=d["complaint_id"].encode(), value=json.dumps(d).encode())
            for d in docs
        ]
        offsets = [m.get(timeout=30).offset for m in meta]
    finally:
        producer.close()

    doc = {
        "schema": "strategy/v1",
        "version": 1,
        "updated_at": "2026-01-01T00:00:00Z",
        "updated_by": "test",
        "reason": "test",
        "tasks": {t: {"mode": "champion", "champion": "m@1"} for t in LABELS},
    }
    sim = Simulator(parse(doc, HEADS.get), {"m@1": Skill(0.8)}, LABELS)
    at = datetime(2026, 1, 5, tzinfo=UTC)
    batch: list[Decoded] = []
    for i, (d, offset) in enumerate(zip(docs, offsets, strict=True)):
        sha = (
            hashlib.sha256(d["text"].encode()).hexdigest() if i != 7 else "f" * 64
        )  # row 7: input changed
        labels = {"team": "banking", "issue": "fees", "vulnerable": "yes" if i % 5 == 0 else "no"}
        t = Truth(d["complaint_id"], labels, (topic, 0, offset), sha)
        alloc, _ = sim.allocate(t, at)
        batch.append(decode("allocation", "a", 0, i, encode(alloc)))
        if i != 9:  # complaint 9 gets no feedback: not exported
            batch.append(
                decode("feedback", "f", 0, i, encode(feedback(t, at + timedelta(hours=3))))
            )
    client = redis.Redis.from_url(redis_url)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        JoinStore(client, prefix, 86_400).apply(batch, {}, at.timestamp())
        admin.delete_records(
            {TopicPartition(topic, 0): offsets[3]}
        )  # retention took the first three inputs
        out = tmp_path / "feedback.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "promoter", "export", "--out", str(out)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        admin.close()
        client.close()

    assert report["rows"] == 35 and report["skipped"] == {"not_retained": 3, "input_changed": 1}, (
        report
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["complaint_id"]: r for r in rows}
    assert (
        len(by_id) == 35
        and docs[9]["complaint_id"] not in by_id
        and docs[7]["complaint_id"] not in by_id
    )
    first = by_id[docs[10]["complaint_id"]]
    assert first["text"] == docs[10]["text"] and first["vulnerable"] is True
    assert set(first) >= {
        "complaint_id",
        "text",
        "team",
        "issue",
        "vulnerable",
        "decided_at",
        "model_versions",
    }
    assert first["model_versions"] == {"issue": "m@1", "team": "m@1", "vulnerable": "m@1"}

    pytest.importorskip("pandas")
    from trainer.data import load_feedback
    from trainer.labels import LabelSpace, load_label_space

    space: LabelSpace = load_label_space()
    team = space.teams[0]
    relabelled = (
        tmp_path / "relabelled.jsonl"
    )  # the trainer knows its own teams; ours are toy names
    relabelled.write_text("".join(json.dumps(r | {"team": team}) + "\n" for r in rows))
    frame, loaded = load_feedback(relabelled, space)
    assert loaded.rows_out == 35 and list(frame["team"].unique()) == [team]
    assert (frame["vulnerable"] == "yes").sum() == sum(r["vulnerable"] for r in rows)
