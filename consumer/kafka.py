"""Thin adapter over kafka-python: client configuration from settings, the consumers every process
uses, topic creation, offset bookkeeping, error mapping.

Application semantics (batching, the commit protocol) live in ``consumer.loop``; this module only
knows how to talk to the broker. ``consumer.kafka_memory`` is an in-memory double of the same
surface, for unit tests of the loops.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka import errors as kerrors
from kafka.admin import NewTopic

from consumer.errors import BrokerError, ConfigError
from consumer.settings import CommonSettings, ConsumerSettings

log = logging.getLogger(__name__)

# bounded memory: at most this much fetched ahead of a loop
FETCH_MAX_BYTES = 8 * 1024 * 1024


class Record(Protocol):
    """What the loops read of a consumed record: kafka-python's ``ConsumerRecord`` and
    ``consumer.kafka_memory.MemoryRecord`` both have it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds since the epoch
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def client_config(settings: CommonSettings) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients (SASL/TLS by
    configuration). A TLS file that does not exist is a ``ConfigError``."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        cfg["sasl_mechanism"] = settings.kafka_sasl_mechanism
        cfg["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            cfg["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, f"kafka_{key}")
        if value:
            # kafka-python would only log the error and retry until its bootstrap timeout
            if not os.path.isfile(value):
                raise ConfigError(f"KAFKA_{key.upper()}={value}: no such file")
            cfg[key] = value
    return cfg


def _unreachable(exc: kerrors.KafkaError) -> bool:
    """No broker answered: kafka-python 3 times out bootstrapping, 2.x raised NoBrokersAvailable."""
    if type(exc).__name__ == "NoBrokersAvailable":
        return True
    return isinstance(exc, kerrors.KafkaTimeoutError) and "bootstrap" in str(exc)


@contextlib.contextmanager
def map_kafka_errors(what: str, settings: CommonSettings | None = None) -> Iterator[None]:
    """The one boundary where kafka-python errors become ``BrokerError``. With ``settings``, brokers
    that cannot be reached are named, with the settings to check."""
    try:
        yield
    except kerrors.KafkaError as exc:  # str(exc) names the error class itself
        if settings is not None and _unreachable(exc):
            protocol = settings.kafka_security_protocol
            raise BrokerError(
                f"{what}: no Kafka broker answered at {settings.kafka_bootstrap_servers} "
                f"({protocol}); check KAFKA_BOOTSTRAP_SERVERS"
                + ("" if protocol == "PLAINTEXT" else " and the KAFKA_SSL_*/KAFKA_SASL_* settings")
            ) from exc
        raise BrokerError(f"{what}: {exc}") from exc


def transactional_producer(
    settings: ConsumerSettings, transactional_id: str | None = None
) -> KafkaProducer:
    """A producer whose sends and the input offsets commit atomically (DESIGN section 5).

    ``transactional_id`` is stable per pod (``<group>-<instance>`` unless given); zombie fencing
    across rebalances uses the consumer group metadata passed to ``send_offsets_to_transaction``
    (KIP-447), so pods need not own fixed partitions.
    """
    with map_kafka_errors("transactional producer", settings):
        producer = KafkaProducer(
            **client_config(settings),
            transactional_id=transactional_id
            or f"{settings.consumer_group}-{settings.instance_id}",
            transaction_timeout_ms=settings.transaction_timeout_ms,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            compression_type=None,
        )
        producer.init_transactions()
    return producer


def survive_poll_timeout_during_join(consumer: KafkaConsumer) -> KafkaConsumer:
    """Work around a kafka-python 3.0.12 bug (tests/integration/test_kafka_semantics.py documents
    it).

    When ``poll(timeout_ms)`` expires while JoinGroup/SyncGroup is in flight, the finished join is
    never applied once ``need_rejoin()`` turns False: the consumer stays without partitions and
    heartbeats for good. Counting an unconsumed join task as "needs rejoin" makes the next poll
    finish it, at the cost of one extra JoinGroup.
    """
    coordinator = consumer._coordinator
    need_rejoin = coordinator.need_rejoin
    coordinator.need_rejoin = lambda: need_rejoin() or coordinator._join_task is not None
    return consumer


def group_consumer(
    settings: CommonSettings,
    topics: Sequence[str],
    group_id: str,
    max_poll_records: int,
    **tuning: Any,
) -> KafkaConsumer:
    """A ``read_committed`` member of ``group_id`` over ``topics`` that never commits on its own:
    offsets move only when its owner commits them (in a transaction, or after its state is saved).
    A new group starts at the earliest offset; prefetch is bounded. ``tuning``: further kafka-python
    settings (they override these)."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
        "max_poll_records": max_poll_records,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        **tuning,
    }
    with map_kafka_errors(f"consumer of group {group_id}", settings):
        return survive_poll_timeout_during_join(KafkaConsumer(*topics, **config))


def batch_consumer(settings: ConsumerSettings, topic: str) -> KafkaConsumer:
    """The allocation loop's consumer: offsets only move inside its transactions."""
    return group_consumer(
        settings,
        [topic],
        settings.consumer_group,
        settings.batch_max_messages,
        max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 1024),
        # a batch is polled, scored and committed before the next poll; it must fit in this
        max_poll_interval_ms=300_000,
        partition_assignment_strategy=_assignors(),
    )


def reader(settings: CommonSettings, **tuning: Any) -> KafkaConsumer:
    """A consumer with no group, for reading chosen offsets (``assign`` + ``seek``): committed data
    only, never an offset commit. ``tuning``: further kafka-python settings."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        **tuning,
    }
    with map_kafka_errors("reader", settings):
        return KafkaConsumer(**config)


def _assignors() -> list[Any]:
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    # round robin spreads partitions of one topic evenly across pods
    return [RoundRobinPartitionAssignor, RangePartitionAssignor]


def ensure_topics(
    settings: CommonSettings, topics: list[str], partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Existing topics are left
    as they are."""
    with map_kafka_errors("topic creation", settings):
        admin = KafkaAdminClient(**client_config(settings), client_id="complaints-allocation-admin")
        try:
            existing = set(admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                new = [
                    NewTopic(
                        t,
                        num_partitions=partitions or settings.topic_partitions,
                        replication_factor=settings.topic_replication,
                    )
                    for t in missing
                ]
                # another pod may win the race
                with contextlib.suppress(kerrors.TopicAlreadyExistsError):
                    admin.create_topics(new)
            return missing
        finally:
            admin.close()


def lag(consumer: KafkaConsumer) -> tuple[int, int]:
    """(partitions owned, records behind the log end over them). Highwater marks come with fetches:
    no I/O."""
    assignment, behind = consumer.assignment(), 0
    for tp in assignment:
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            behind += max(0, high - consumer.position(tp, timeout_ms=0))
        except Exception:  # position unknown right after a rebalance: skip this partition this time
            continue
    return len(assignment), behind


def next_offsets(records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit after ``records``: one past the last record of each partition."""
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if tp not in out or out[tp].offset <= r.offset:
            out[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
    return out


def rewind(consumer: KafkaConsumer, records: Iterable[Record]) -> None:
    """Seek every still-owned partition of ``records`` back to its first record, to process them
    again."""
    first: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        first[tp] = min(first.get(tp, r.offset), r.offset)
    owned = consumer.assignment()
    for tp, offset in first.items():
        if tp in owned:
            consumer.seek(tp, offset)
