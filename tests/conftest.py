"""Shared test fixtures: where the real services are, and per-test isolation on them.

Services, session-scoped, first match wins:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` from the environment (``make test`` starts
   ``scripts/stack.sh up`` and exports ``.stack/env``; CI does the same);
2. testcontainers, when a Docker engine answers;
3. otherwise the test is skipped with a message naming the variables.

Per test: ``unique`` names, ``topic_factory`` topics (deleted after), ``redis_prefix`` keys (deleted
after), a guard that fails a test which leaves threads behind, and the root logger put back as it
was.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

SKIP_HINT = (
    "set KAFKA_BOOTSTRAP_SERVERS / REDIS_URL or run `make test`, which starts the local stack"
)


def _unavailable(what: str) -> None:
    """Skip, unless the run promised services (``make test`` sets CA_REQUIRE_SERVICES=1): then
    fail."""
    if os.environ.get("CA_REQUIRE_SERVICES"):
        pytest.fail(
            f"no {what}, but CA_REQUIRE_SERVICES is set: the local stack did not come up",
            pytrace=False,
        )
    pytest.skip(f"no {what}: {SKIP_HINT}")


THREAD_GRACE_SECONDS = 5.0


def _docker_available() -> bool:
    """True if a Docker engine answers within a couple of seconds; never raises."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    if not _docker_available():
        _unavailable("Kafka broker")
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get("TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0")
    container = (
        KafkaContainer(image)
        .with_kraft()
        # One broker: the transaction log cannot have more replicas than brokers. Same as the stack.
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        yield container.get_bootstrap_server()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if not _docker_available():
        _unavailable("Redis server")
    from testcontainers.community.redis import RedisContainer

    with RedisContainer("redis:7.0") as container:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


@pytest.fixture
def unique() -> str:
    """A short suffix no other test (or earlier run on the same broker) uses."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique: str) -> Iterator[Callable[..., str]]:
    """``make(name="t", partitions=1) -> topic``: creates ``<name>-<unique>[-n]``; all deleted
    after."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id=f"test-admin-{unique}")
    created: list[str] = []

    def make(name: str = "t", partitions: int = 1) -> str:
        topic = f"{name}-{unique}" + (f"-{len(created)}" if created else "")
        admin.create_topics([NewTopic(topic, partitions, 1)])  # raises on any error
        created.append(topic)
        # Created is not usable yet (KRaft propagates metadata and elects leaders after replying).
        admin.wait_for_topics([topic], timeout_ms=15000)
        return topic

    try:
        yield make
    finally:
        try:
            if created:
                admin.delete_topics(created)
        finally:
            admin.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis, unique: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted after the test."""
    prefix = f"test:{unique}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


def _leaky(thread: threading.Thread) -> bool:
    # kafka-python's network threads are daemons, so an unclosed client would pass a daemon-blind
    # check: count them as leaks too. Other daemon threads (library pools) are left alone.
    return thread.is_alive() and (not thread.daemon or thread.name.startswith("kafka-"))


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """Puts the root logger's handlers and level back after each test. A test that runs a CLI
    in-process (``logs.setup``) leaves a handler on that test's captured stderr; pytest closes the
    stream afterwards, and every later log line then printed a "--- Logging error ---" traceback
    into the run's output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fails a test that leaves non-daemon threads (or open Kafka clients) running after it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    while leaked := [t for t in threading.enumerate() if t not in before and _leaky(t)]:
        if time.monotonic() >= deadline:
            pytest.fail(
                f"test left threads running: {sorted(t.name for t in leaked)}", pytrace=False
            )
        time.sleep(0.05)
