"""Wiring of ``allocator promoter``: settings -> clients -> state, evaluator, loop, with signals and
health."""

from __future__ import annotations

import logging
import signal
import threading

import redis
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from consumer import kafka, logs, store
from consumer.health import HealthServer, heartbeat
from consumer.metrics import PromoterMetrics
from consumer.registry import Registry
from consumer.settings import PromoterSettings
from consumer.store import StrategyStore
from promoter.evaluate import Evaluator, Policy
from promoter.hooks import PromoterHooks
from promoter.loop import PromoterLoop, RunningExperiments
from promoter.records import Kind
from promoter.state import JoinStore

log = logging.getLogger("promoter")

MAX_RECORDS = 500
WAIT_MS = 200


def policy_of(settings: PromoterSettings) -> Policy:
    return Policy(
        settings.alpha, settings.min_labels, settings.auto_apply, settings.promoter_canary_weight
    )


def kinds_of(settings: PromoterSettings) -> dict[str, Kind]:
    return {
        settings.topic_allocations: "allocation",
        settings.topic_shadow: "shadow",
        settings.topic_feedback: "feedback",
    }


def build_evaluator(
    settings: PromoterSettings, client: redis.Redis, hooks: PromoterHooks | None = None
) -> Evaluator:
    models = Registry(client, settings.redis_prefix, settings.model_cache_dir)
    strategies = StrategyStore(client, settings.redis_prefix, models)
    if hooks is None:
        return Evaluator(client, settings.redis_prefix, strategies, policy_of(settings))
    return Evaluator(
        client,
        settings.redis_prefix,
        strategies,
        policy_of(settings),
        hooks.verdict,
        hooks.decision,
    )


def group_consumer(settings: PromoterSettings, topics: list[str]) -> KafkaConsumer:
    """One group over the three topics, read_committed, offsets committed by the loop after the
    state."""
    return kafka.group_consumer(
        settings,
        topics,
        settings.promoter_group,
        MAX_RECORDS,
        # a crashed promoter's partitions move after 10 s, not 45: replays are cheap and
        # double-count nothing
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
    )


def promote(settings: PromoterSettings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); finish the batch in flight, leave the group,
    return 0."""
    logs.setup(settings.log_level)
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = PromoterMetrics(registry)
    kinds = kinds_of(settings)
    if settings.create_topics:
        created = kafka.ensure_topics(settings, list(kinds))
        if created:
            log.info("topics created", extra={"topics": created})
    client = store.connect(settings)
    hooks = PromoterHooks(metrics)
    evaluator = build_evaluator(settings, client, hooks)
    consumer = group_consumer(settings, list(kinds))
    loop = PromoterLoop(
        consumer,
        kinds,
        JoinStore(client, settings.redis_prefix, settings.join_ttl_s),
        RunningExperiments(evaluator.store),
        evaluator,
        hooks,
        MAX_RECORDS,
        WAIT_MS,
    )

    def ready() -> tuple[bool, str]:
        try:
            ok = hooks.assigned > 0 and bool(client.ping())
        except redis.RedisError:
            ok = False
        metrics.up.set(1 if ok else 0)
        return ok, "promoting" if ok else "waiting for partitions or Redis"

    live = heartbeat(lambda: hooks.last_beat)
    health = HealthServer(settings.metrics_port, registry, live, ready).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "promoting",
        extra={
            "topics": list(kinds),
            "group": settings.promoter_group,
            "auto_apply": settings.auto_apply,
            "metrics_port": health.port,
        },
    )
    try:
        loop.run(stop)
    finally:
        consumer.close(
            autocommit=False
        )  # leave the group now: partitions move without a session timeout
        health.stop()
        client.close()
        log.info("stopped")
    return 0
