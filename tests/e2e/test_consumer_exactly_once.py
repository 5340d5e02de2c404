"""Issue 3, done-when: exactly-once under SIGKILL, DLQ with reasons, and a clean drain on
SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.flow import MALFORMED, Feeder, mixed_inputs, real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count

pytestmark = pytest.mark.e2e


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, redis_url: str, unique: str, tiny_model: Path, tmp_path: Path
) -> None:
    env = {**topic_env(unique, kafka_bootstrap, redis_url), "ALLOCATOR_MODEL_DIR": str(tiny_model)}
    docs = real_complaints(2000)
    inputs = list(mixed_inputs(docs))
    bad = {k.decode(): v for k, v in inputs if k.startswith(b"bad-")}
    a = Proc(["consume"], env, tmp_path / "a.log")
    b = Proc(["consume"], env, tmp_path / "b.log")
    procs = [a, b]
    try:
        a.wait_log("consuming")
        b.wait_log("consuming")
        feeder = Feeder(kafka_bootstrap, env["ALLOCATOR_TOPIC_COMPLAINTS"], inputs, rate=400)
        feeder.start()
        while feeder.sent < len(inputs) // 3:
            time.sleep(0.05)
        a.signal(signal.SIGKILL)  # mid-stream, mid-transaction most likely
        a.wait(10)
        a2 = Proc(["consume"], env, tmp_path / "a2.log")
        procs.append(a2)
        feeder.join(60)
        counts = wait_count(
            kafka_bootstrap,
            [env["ALLOCATOR_TOPIC_ALLOCATIONS"], env["ALLOCATOR_TOPIC_DLQ"]],
            len(inputs),
            timeout=180,
        )
        assert sum(counts.values()) >= len(inputs), counts
        assert b.p.poll() is None and a2.p.poll() is None, (
            "surviving consumers must not crash (e.g. fenced)"
        )
    finally:
        for p in procs:
            p.stop()

    allocations = [
        json.loads(r.value) for r in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
    ]
    per_id = Counter(a["complaint_id"] for a in allocations)
    assert set(per_id) == {d["complaint_id"] for d in docs}, (
        "every valid complaint has an allocation"
    )
    assert per_id.most_common(1)[0][1] == 1, "no complaint has two committed allocations"
    assert len({a["decision_id"] for a in allocations}) == len(allocations)

    dlq = read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_DLQ"])
    assert len(dlq) == len(bad)
    for rec in dlq:
        key = rec.key.decode()
        headers = {k: v.decode() for k, v in rec.headers}
        assert rec.value == bad[key], "the DLQ keeps the original bytes"
        expected = MALFORMED[int(key.rsplit("-", 1)[1])][1]
        assert headers["dlq.error.code"] == expected, (key, headers)
        assert headers["dlq.source.topic"] == env["ALLOCATOR_TOPIC_COMPLAINTS"]


def test_sigterm_drains_the_batch_in_flight_and_exits_quickly(
    kafka_bootstrap: str, redis_url: str, unique: str, tiny_model: Path, tmp_path: Path
) -> None:
    env = {
        **topic_env(unique, kafka_bootstrap, redis_url, partitions=2),
        "ALLOCATOR_MODEL_DIR": str(tiny_model),
    }
    docs = real_complaints(600)
    inputs = [(d["complaint_id"].encode(), json.dumps(d).encode()) for d in docs]
    first = Proc(["consume"], env, tmp_path / "first.log")
    second = None
    try:
        first.wait_log("consuming")
        feeder = Feeder(kafka_bootstrap, env["ALLOCATOR_TOPIC_COMPLAINTS"], inputs, rate=300)
        feeder.start()
        while feeder.sent < len(inputs) // 2:
            time.sleep(0.05)
        t0 = time.monotonic()
        first.signal(signal.SIGTERM)
        assert first.wait(10) == 0
        assert time.monotonic() - t0 < 10
        assert first.wait_log("drained")
        feeder.join(30)
        second = Proc(["consume"], env, tmp_path / "second.log")
        wait_count(kafka_bootstrap, [env["ALLOCATOR_TOPIC_ALLOCATIONS"]], len(docs), timeout=120)
    finally:
        first.stop()
        if second:
            second.stop()
    allocations = [
        json.loads(r.value) for r in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
    ]
    per_id = Counter(a["complaint_id"] for a in allocations)
    assert set(per_id) == {d["complaint_id"] for d in docs}
    assert max(per_id.values()) == 1
