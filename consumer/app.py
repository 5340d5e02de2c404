"""Wiring of ``allocator consume``: settings → clients → strategy watcher → loop, with signals and
health."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from kafka.errors import ProducerFencedError
from prometheus_client import CollectorRegistry

from consumer import kafka, logs, store
from consumer.breaker import Breaker, BreakerConfig
from consumer.errors import BrokerError
from consumer.health import HealthServer, heartbeat
from consumer.hooks import LoopHooks
from consumer.inference import cpu_limit
from consumer.loop import Loop, Topics
from consumer.metrics import ConsumerMetrics
from consumer.plan import StrategyWatcher, config_plan
from consumer.registry import Registry
from consumer.settings import ConsumerSettings
from consumer.store import StrategyStore

log = logging.getLogger("consumer")


def consume(settings: ConsumerSettings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); drain the batch in flight, leave the group,
    return 0 (1 when the broker failed or a newer instance fenced this one: restart it)."""
    logs.setup(settings.log_level)
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    hooks = LoopHooks(metrics)
    breaker = _breaker(settings)
    watcher: StrategyWatcher | None = None

    def ready() -> tuple[bool, str]:
        if watcher is None or watcher.plan is None:
            ok, why = False, NOT_READY
        elif hooks.breaker_open:
            ok, why = False, breaker.reason
        else:
            ok, why = True, "serving"
        metrics.up.set(1 if ok else 0)
        return ok, why

    # bound first: a busy port is reported at once, not after Kafka and Redis have answered
    health = HealthServer(
        settings.metrics_port, registry, heartbeat(lambda: hooks.last_beat), ready
    ).start()
    try:
        if settings.create_topics:
            _create_topics(settings)
        threads = settings.ort_threads or cpu_limit()
        watcher = _watcher(settings, metrics, threads)
        watcher.start()
        producer = kafka.transactional_producer(settings)
        consumer = kafka.batch_consumer(settings, settings.topic_complaints)
    except BaseException:
        if watcher is not None:
            watcher.stop()
        health.stop()
        raise
    _on_signals(stop, settings.drain_timeout_s)
    plan = watcher  # bound for the lambda below: the loop reads the plan in force per batch
    loop = Loop(
        consumer,
        producer,
        lambda: plan.plan,
        Topics(settings.topic_allocations, settings.topic_shadow, settings.topic_dlq),
        hooks,
        settings.batch_max_messages,
        settings.batch_max_wait_ms,
        settings.max_message_bytes,
        settings.max_text_chars,
        breaker,
    )
    log.info(
        "consuming",
        extra={
            "topic": settings.topic_complaints,
            "group": settings.consumer_group,
            "threads": threads,
            "metrics_port": health.port,
        },
    )
    try:
        loop.run(stop)
    except BrokerError as exc:
        log.error("broker failure; exiting to be restarted", extra={"error": str(exc)})
        return 1
    except ProducerFencedError:
        log.error("fenced: a newer instance owns this transactional id; exiting to be restarted")
        return 1
    finally:
        t0 = time.monotonic()
        # leave the group now: partitions move without waiting for a session timeout
        consumer.close(autocommit=False)
        producer.close(timeout=settings.drain_timeout_s)
        plan.stop()
        metrics.drain_seconds.set(time.monotonic() - t0)
        health.stop()
        log.info("drained", extra={"seconds": round(time.monotonic() - t0, 3)})
    return 0


NOT_READY = "no model plan yet (no strategy in Redis and no ALLOCATOR_MODEL_DIR)"


def _create_topics(settings: ConsumerSettings) -> None:
    topics = [
        settings.topic_complaints,
        settings.topic_allocations,
        settings.topic_shadow,
        settings.topic_dlq,
    ]
    created = kafka.ensure_topics(settings, topics)
    if created:
        log.info("topics created", extra={"topics": created})


def _breaker(settings: ConsumerSettings) -> Breaker:
    return Breaker(
        BreakerConfig(
            settings.breaker_failure_ratio,
            settings.breaker_min_records,
            settings.breaker_window,
            settings.breaker_cooldown_s,
        )
    )


def _watcher(settings: ConsumerSettings, metrics: ConsumerMetrics, threads: int) -> StrategyWatcher:
    """The strategy watcher over Redis, with ``ALLOCATOR_MODEL_DIR`` (if set) as the plan to serve
    until a strategy exists."""
    client = store.connect(settings)
    models = Registry(client, settings.redis_prefix, settings.model_cache_dir, settings.hub_offline)
    fallback = (
        config_plan(settings.model_dir, threads, settings.max_sub_batch)
        if settings.model_dir
        else None
    )
    return StrategyWatcher(
        StrategyStore(client, settings.redis_prefix, models),
        models,
        metrics,
        settings.strategy_poll_s,
        threads,
        settings.max_sub_batch,
        fallback,
    )


def _on_signals(stop: threading.Event, drain_timeout_s: float) -> None:
    """SIGTERM/SIGINT set ``stop`` and arm a hard exit after the drain timeout."""

    def on_signal(*_: object) -> None:
        stop.set()
        # kafka-python's commit/abort wait without a deadline when the broker is gone: never outlive
        # the grace period. An open transaction is aborted by the broker (or by our restart), so
        # nothing is lost.
        deadline = threading.Timer(drain_timeout_s, _hard_exit, args=(drain_timeout_s,))
        deadline.daemon = True
        deadline.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _hard_exit(seconds: float) -> None:
    log.error("drain did not finish in time; exiting without it", extra={"seconds": seconds})
    logging.shutdown()
    os._exit(1)
