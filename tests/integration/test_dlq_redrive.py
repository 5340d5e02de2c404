"""``allocator dlq redrive`` on a real broker: SIGKILLed mid-way and rerun, every selected dead
letter reaches the input topic exactly once (read_committed), with its redrive headers; records
outside the selection stay where they are; ``dlq list`` shows what is there without the text."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumer.dlq import dlq_headers
from tests.flow import topic_env
from tests.procs import Proc, read_all, run_cli, wait_count

pytestmark = pytest.mark.integration

N = 1200  # selected dead letters; at 10 per transaction the kill lands mid-way


class Src:
    """The source coordinates of a dead letter, as the loop saw them."""

    def __init__(self, topic: str, offset: int) -> None:
        self.topic, self.partition, self.offset, self.headers = topic, 0, offset, []


def fill_dlq(bootstrap: str, env: dict[str, str]) -> None:
    """N ``not_json`` dead letters, plus one ``model_failure`` every 10 that the selection
    leaves."""
    dlq, source = env["ALLOCATOR_TOPIC_DLQ"], env["ALLOCATOR_TOPIC_COMPLAINTS"]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    try:
        for i in range(N + N // 10):
            code = "model_failure" if i % 11 == 10 else "not_json"
            headers = dlq_headers(Src(source, i), code, "the text said: private")
            producer.send(dlq, key=f"c{i}".encode(), value=f"private {i}".encode(), headers=headers)
        producer.flush(60)
    finally:
        producer.close()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, timeout=180)


def test_a_killed_redrive_rerun_sends_each_record_once(
    kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    env = topic_env(unique, kafka_bootstrap, redis_url, partitions=2)
    fill_dlq(kafka_bootstrap, env)
    target = env["ALLOCATOR_TOPIC_COMPLAINTS"]
    args = ["dlq", "redrive", "--code", "not_json", "--batch-size", "10"]

    first = Proc(args, env, tmp_path / "redrive-1.log")
    try:
        seen = wait_count(kafka_bootstrap, [target], want=N // 4, timeout=120)[target]
        first.signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL, "the redrive finished before it was killed"
    finally:
        first.stop()
    assert 0 < seen < N

    time.sleep(1)  # the killed run's open transaction is aborted by the rerun's init_transactions
    rerun = cli([*args, "--json"], env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert 0 < report["sent"] < N  # it resumed: the records the first run committed are not resent
    assert min(int(o) for o in report["resumed_from"].values()) >= 0

    records = read_all(kafka_bootstrap, target)
    keys = Counter(r.key for r in records)
    assert len(keys) == N and set(keys.values()) == {1}, "a record was lost or sent twice"
    headers = dict(records[0].headers)
    assert headers["redrive.attempt"] == b"1"
    assert headers["redrive.origin.topic"].decode() == env["ALLOCATOR_TOPIC_DLQ"]
    assert int(headers["redrive.source.offset"]) % 11 != 10  # only not_json was selected

    again = cli([*args, "--json"], env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sent"] == 0  # the cursor is at the end of the DLQ

    listed = cli(["dlq", "list", "--code", "model_failure", "--limit", "5"], env)
    assert listed.returncode == 0, listed.stderr
    assert "private" not in listed.stdout
    assert listed.stdout.rstrip().endswith(
        f"5 of {N + N // 10} dead letters in {env['ALLOCATOR_TOPIC_DLQ']} match (the first shown: "
        "--limit)"
    )
