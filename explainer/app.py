"""Wiring of ``allocator explain serve`` and of the one-shot ``allocator explain DECISION_ID``.

serve: settings → Redis registry, Kafka record reader, allocation indexer thread → service → HTTP
API (FastAPI on uvicorn, ``explainer.http``); shap is imported and its kernels compiled in a
background thread, and ``/readyz`` says ready once that is done and the index has caught up.
SIGTERM/SIGINT stop the server, then the indexer.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from consumer import logs, store
from consumer.errors import ConfigError
from consumer.health import HealthServer
from consumer.inference import cpu_limit
from consumer.metrics import ExplainerMetrics
from consumer.registry import Registry
from consumer.settings import ExplainerSettings
from explainer.attribution import require_shap, warm_up
from explainer.http import ExplainerServer
from explainer.index import AllocationIndexer, DecisionIndex
from explainer.model_cache import ModelCache
from explainer.service import ExplainService, Limits
from explainer.sources import KafkaRecords

log = logging.getLogger("explainer")


@dataclass
class Parts:
    """What one explainer process holds; ``close`` releases the Kafka clients."""

    service: ExplainService
    records: KafkaRecords
    index: DecisionIndex
    indexer: AllocationIndexer

    def close(self) -> None:
        self.indexer.stop()
        self.records.close()


def build(settings: ExplainerSettings, metrics: ExplainerMetrics | None = None) -> Parts:
    """The service and its clients from settings (the indexer is built, not started)."""
    client = store.connect(settings)
    registry = Registry(client, settings.redis_prefix, settings.model_cache_dir)
    # each computation gets an equal share of the CPUs: more threads than cores only adds contention
    threads = max(1, cpu_limit() // settings.explainer_concurrency)
    limits = Limits(
        max_evals=settings.explainer_max_evals,
        budget_s=settings.explainer_budget_s,
        concurrency=settings.explainer_concurrency,
        cache_size=settings.explainer_cache_size,
    )
    records = KafkaRecords(settings)
    index = DecisionIndex()
    indexer = AllocationIndexer(settings, settings.topic_allocations, index)
    service = ExplainService(
        ModelCache(registry, threads), records, limits, settings.topic_allocations, index, metrics
    )
    return Parts(service, records, index, indexer)


Check = Callable[[], tuple[bool, str]]


def _warm_up_in_background() -> threading.Event:
    """Import shap and compile its kernels in a thread; the event is set when done."""
    warmed = threading.Event()

    def warm() -> None:
        warm_up()
        warmed.set()

    threading.Thread(target=warm, name="shap-warm-up", daemon=True).start()
    return warmed


def _probes(
    settings: ExplainerSettings, parts: Parts, warmed: threading.Event
) -> tuple[Check, Check]:
    """(live, ready): alive while the indexer runs; ready once it caught up and shap is warm."""

    def live() -> tuple[bool, str]:
        return parts.indexer.alive(), f"indexer alive, {len(parts.index)} decisions indexed"

    def ready() -> tuple[bool, str]:
        if parts.indexer.error:
            return False, f"indexer: {parts.indexer.error}"
        if not parts.indexer.caught_up:
            return (
                False,
                f"indexing {settings.topic_allocations}: {parts.indexer.indexed} decisions so far",
            )
        if not warmed.is_set():
            return False, "warming up shap"
        return True, f"ready: {len(parts.index)} decisions indexed"

    return live, ready


def serve(settings: ExplainerSettings, stop: threading.Event | None = None) -> int:
    """Run the HTTP API until SIGTERM/SIGINT (or ``stop``); return 0."""
    logs.setup(settings.log_level)
    if settings.explainer_token is None or not settings.explainer_token.get_secret_value():
        raise ConfigError(
            "ALLOCATOR_EXPLAINER_TOKEN (or a file of that name in ALLOCATOR_SECRETS_DIR) is "
            "required"
        )
    require_shap()  # fail at start, with one line, in an image without the `explain` extra
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = ExplainerMetrics(registry)
    parts = build(settings, metrics)
    parts.indexer.start()
    live, ready = _probes(settings, parts, _warm_up_in_background())
    server = ExplainerServer(
        parts.service,
        settings.explainer_token.get_secret_value(),
        metrics,
        registry,
        live,
        ready,
        settings.explainer_port,
    ).start()
    # probes and Prometheus also get a port of their own, like every other process of the project
    health = HealthServer(settings.metrics_port, registry, live, ready).start()
    if threading.current_thread() is threading.main_thread():  # tests run serve() in a thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info(
        "explainer serving",
        extra={
            "port": server.port,
            "metrics_port": health.port,
            "topic": settings.topic_allocations,
            "max_evals": settings.explainer_max_evals,
            "budget_s": settings.explainer_budget_s,
            "concurrency": settings.explainer_concurrency,
        },
    )
    try:
        stop.wait()
    finally:
        server.stop()
        health.stop()
        parts.close()
        log.info("explainer stopped")
    return 0
