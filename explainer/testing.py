"""Test doubles shipped with the code: decisions made by the consumer's own router, without Kafka or
Redis.

``decide`` scores a complaint exactly as a consumer pod would (``consumer.router.Router`` under a
champion-only plan) and appends the complaint to a ``MemoryRecords`` log, so the allocation's source
coordinates resolve. ``memory_registry`` is the real ``Registry`` over fakeredis (a dev dependency),
and ``MemoryWorld`` wires an ``ExplainService`` over both, with an index, as ``explainer.app`` wires
the real one.
"""

from __future__ import annotations

import time
from pathlib import Path

from consumer.contracts.messages import Allocation, Complaint, Source, dump
from consumer.metrics import ExplainerMetrics
from consumer.package import ModelPackage
from consumer.plan import build_plan
from consumer.registry import Registry
from consumer.router import Item, Router
from consumer.strategy import Strategy, TaskPlan
from explainer.index import DecisionIndex
from explainer.model_cache import ModelCache
from explainer.service import ExplainService, Limits
from explainer.sources import MemoryRecords


def decide(
    package: ModelPackage,
    complaint: Complaint,
    records: MemoryRecords,
    topic: str = "complaints",
    version: int = 1,
) -> Allocation:
    """The allocation a consumer serving ``package`` as champion publishes for ``complaint``."""
    offset = records.append(topic, 0, dump(complaint))
    strategy = Strategy(version, {t: TaskPlan("champion", package.ref) for t in package.heads})
    plan = build_plan(strategy, {package.ref: package}, None, threads=1, max_sub_batch=1)
    item = Item(complaint, Source(topic=topic, partition=0, offset=offset), time.monotonic())
    routed = Router(plan).route([item])
    if routed.failures:
        raise routed.failures[0][1]
    return routed.allocations[0][1]


def memory_registry(prefix: str = "test:", cache_dir: Path = Path(".cache/models")) -> Registry:
    import fakeredis

    return Registry(fakeredis.FakeRedis(), prefix, cache_dir)


class MemoryWorld:
    """A registry (with ``package_dir`` registered unless told otherwise), a complaints log, an
    allocations index and the service over them. ``decide`` makes a decision and indexes its
    allocation."""

    def __init__(
        self,
        package_dir: Path,
        register: bool = True,
        limits: Limits | None = None,
        metrics: ExplainerMetrics | None = None,
    ) -> None:
        from consumer.package import load_package

        self.package = load_package(package_dir)
        self.records = MemoryRecords()
        self.registry = memory_registry()
        if register:
            self.registry.register(str(package_dir))
        self.index = DecisionIndex()
        self.service = ExplainService(
            ModelCache(self.registry, threads=1),
            self.records,
            limits or Limits(max_evals=80, budget_s=60, concurrency=1, cache_size=8),
            "allocations",
            self.index,
            metrics,
        )

    def decide(self, text: str, complaint_id: str = "c-1") -> Allocation:
        allocation = decide(
            self.package, Complaint(complaint_id=complaint_id, text=text), self.records
        )
        offset = self.records.append("allocations", 0, dump(allocation))
        self.index.put(allocation.decision_id, 0, offset, time.time())
        return allocation
