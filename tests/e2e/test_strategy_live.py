"""Issue 4, done-when: strategies switched live across two consumers while complaints stream; Redis
outages."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan, bucket
from tests.flow import Feeder, real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count

pytestmark = pytest.mark.e2e
TASKS = ("team", "issue", "vulnerable")


def strategy_version(proc: Proc) -> int:
    m = re.search(r"^allocator_strategy_version (\S+)$", proc.metrics(), re.M)
    return int(float(m.group(1))) if m else -1


def wait_switched(procs: list[Proc], version: int, timeout: float = 2.0) -> float:
    """Seconds until every consumer reports ``version`` (fails after ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout + 3:
        if all(strategy_version(p) == version for p in procs):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"consumers did not switch to version {version}")


def test_strategy_moves_while_streaming(
    kafka_bootstrap: str,
    redis_url: str,
    unique: str,
    tiny_model: Path,
    tiny_model2: Path,
    tmp_path: Path,
) -> None:
    env = topic_env(unique, kafka_bootstrap, redis_url)
    r = redis.Redis.from_url(redis_url)
    registry = Registry(r, env["ALLOCATOR_REDIS_PREFIX"])
    store = StrategyStore(r, env["ALLOCATOR_REDIS_PREFIX"], registry)
    old, new = registry.register(str(tiny_model)).ref, registry.register(str(tiny_model2)).ref
    v1 = store.write({t: TaskPlan("champion", old) for t in TASKS}, 0, "start", "test")

    docs = real_complaints(4800, split="train")
    repeats = docs[1000:1200]  # sent again in the canary window: the same id must get the same arm
    phases = [docs[:500], docs[500:1500], docs[1500:3800] + repeats, docs[3800:4300], docs[4300:]]
    procs = [Proc(["consume"], env, tmp_path / f"c{i}.log") for i in range(2)]
    switch_s: list[float] = []
    windows: dict[int, str] = {v1.version: "champion(old)"}
    try:
        for p in procs:
            p.wait_log("consuming")
        wait_switched(procs, v1.version, timeout=10)
        sent = 0
        for n, phase in enumerate(phases):
            if n == 1:
                s = store.write(
                    {t: TaskPlan("shadow", old, new, sample=1.0, salt="shadow:x") for t in TASKS},
                    1,
                    "shadow",
                    "test",
                )
                windows[s.version] = "shadow"
            elif n == 2:
                s = store.write(
                    {
                        t: TaskPlan("canary", old, new, weight=0.1, salt=f"canary:{new}")
                        for t in TASKS
                    },
                    2,
                    "canary 10%",
                    "test",
                )
                windows[s.version] = "canary"
            elif n == 3:
                s = store.write({t: TaskPlan("champion", new) for t in TASKS}, 3, "promote", "test")
                windows[s.version] = "champion(new)"
            elif n == 4:
                s = store.rollback("roll back", "test")
                windows[s.version] = "rollback"
            if n:
                switch_s.append(wait_switched(procs, s.version))
            items = [(d["complaint_id"].encode(), json.dumps(d).encode()) for d in phase]
            feeder = Feeder(kafka_bootstrap, env["ALLOCATOR_TOPIC_COMPLAINTS"], items, rate=400)
            feeder.start()
            feeder.join(120)
            sent += len(items)
            # the next switch must not overtake this phase: wait until it is all allocated
            wait_count(kafka_bootstrap, [env["ALLOCATOR_TOPIC_ALLOCATIONS"]], sent, timeout=120)
        assert all(p.p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.stop()
        r.close()
    assert max(switch_s) < 2.0, switch_s

    allocations = [
        json.loads(x.value) for x in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
    ]
    coords = Counter((a["source"]["partition"], a["source"]["offset"]) for a in allocations)
    assert len(allocations) == sum(len(p) for p in phases) and max(coords.values()) == 1, (
        "lost or duplicated"
    )
    by_window: dict[str, list[dict]] = defaultdict(list)
    for a in allocations:
        by_window[windows[a["strategy"]["version"]]].append(a)
    # every allocation names the models its strategy version put in force
    for name, expected in (
        ("champion(old)", "tiny-s0"),
        ("shadow", "tiny-s0"),
        ("champion(new)", "tiny-s1"),
    ):
        versions = {
            p["model"]["version"] for a in by_window[name] for p in a["predictions"].values()
        }
        assert versions == {expected}, (name, versions)
    # rollback returns to the previous version: the canary, with the same salt, so the same arms
    canary = by_window["canary"] + by_window["rollback"]
    assert len(by_window["rollback"]) == len(phases[4])
    share = sum(a["predictions"]["team"]["arm"] == "canary" for a in canary) / len(canary)
    assert abs(share - 0.10) <= 0.015, share
    arms: dict[str, set[str]] = defaultdict(set)
    for a in canary:
        arm = a["predictions"]["team"]["arm"]
        arms[a["complaint_id"]].add(arm)
        assert arm == ("canary" if bucket(f"canary:{new}", a["complaint_id"]) < 0.1 else "champion")
        assert {p["arm"] for p in a["predictions"].values()} == {arm}
        assert {p["model"]["version"] for p in a["predictions"].values()} == {
            "tiny-s1" if arm == "canary" else "tiny-s0"
        }
    assert all(len(v) == 1 for v in arms.values())
    assert sum(len(arms[d["complaint_id"]]) for d in repeats) == len(repeats)
    shadows = read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_SHADOW"])
    assert len(shadows) == len(by_window["shadow"]), (
        "shadow scores every complaint of its window (sample 1.0)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own (append-only file, so a restart keeps the strategy)."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (make test installs it)")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_outage_loses_nothing_and_updates_resume(
    kafka_bootstrap: str,
    unique: str,
    tiny_model: Path,
    tiny_model2: Path,
    tmp_path: Path,
    own_redis: OwnRedis,
) -> None:
    env = topic_env(unique, kafka_bootstrap, own_redis.url, partitions=2)
    client = redis.Redis.from_url(own_redis.url)
    registry = Registry(client, env["ALLOCATOR_REDIS_PREFIX"])
    store = StrategyStore(client, env["ALLOCATOR_REDIS_PREFIX"], registry)
    old, new = registry.register(str(tiny_model)).ref, registry.register(str(tiny_model2)).ref
    store.write({t: TaskPlan("champion", old) for t in TASKS}, 0, "start", "test")
    docs = real_complaints(1200)
    items = [(d["complaint_id"].encode(), json.dumps(d).encode()) for d in docs]
    procs = [Proc(["consume"], env, tmp_path / f"c{i}.log") for i in range(2)]
    try:
        for p in procs:
            p.wait_log("consuming")
        feeder = Feeder(kafka_bootstrap, env["ALLOCATOR_TOPIC_COMPLAINTS"], items, rate=200)
        feeder.start()
        time.sleep(1.5)
        own_redis.stop()  # mid-stream
        time.sleep(3)
        for p in procs:
            assert re.search(r"^allocator_store_up 0", p.metrics(), re.M), (
                "health must say Redis is down"
            )
        own_redis.start()
        feeder.join(60)
        client = redis.Redis.from_url(own_redis.url)
        store = StrategyStore(
            client, env["ALLOCATOR_REDIS_PREFIX"], Registry(client, env["ALLOCATOR_REDIS_PREFIX"])
        )
        v = store.write(
            {t: TaskPlan("champion", new) for t in TASKS}, 1, "after the outage", "test"
        )
        wait_switched(procs, v.version, timeout=5)
        wait_count(kafka_bootstrap, [env["ALLOCATOR_TOPIC_ALLOCATIONS"]], len(docs), timeout=60)
        assert all(p.p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.stop()
        client.close()
    errors = [
        line for p in procs for line in p.lines() if line.get("level") in ("ERROR", "CRITICAL")
    ]
    assert not errors, errors
    allocations = [
        json.loads(x.value) for x in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
    ]
    assert Counter(a["complaint_id"] for a in allocations) == Counter(
        d["complaint_id"] for d in docs
    )
