"""What a pod serves: a ``Plan`` (strategy + loaded models), rebuilt by a watcher thread when the
strategy changes.

The loop reads ``watcher.plan`` once per micro-batch (one attribute read), so a switch never splits
a batch. A strategy whose models fail to fetch or verify is refused and the previous plan stays
(``allocator_model_load_failures_total`` counts the refused package by reason); when Redis is
unreachable the last good plan keeps serving and ``allocator_store_up`` says 0. Each published plan
sets ``allocator_model_info`` and, from the manifests, ``allocator_model_expected_ratio``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from consumer.errors import (
    LOAD_FAILURE_REASONS,
    AllocationError,
    ModelError,
    PackageError,
    RegistryError,
    StoreUnavailableError,
    UnknownModelError,
)
from consumer.inference import OnnxModel, TextEncoder
from consumer.metrics import ConsumerMetrics
from consumer.package import ModelPackage, load_package
from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import Strategy, TaskPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A strategy with every model it names loaded and verified. Immutable; swapped as a whole."""

    strategy: Strategy
    models: dict[str, OnnxModel]
    encoders: dict[tuple[str, int, str], TextEncoder] = field(default_factory=dict)

    def encoder(self, ref: str) -> TextEncoder:
        return self.encoders[TextEncoder.key_of(self.models[ref].package)]


def build_plan(
    strategy: Strategy,
    packages: dict[str, ModelPackage],
    previous: Plan | None,
    threads: int,
    max_sub_batch: int,
) -> Plan:
    """Load the models of ``strategy``, reusing sessions of ``previous`` with the same digest.

    Models no longer named by any task are dropped (unloaded once the old plan is released).
    """
    models: dict[str, OnnxModel] = {}
    encoders: dict[tuple[str, int, str], TextEncoder] = {}
    for ref, package in sorted(packages.items()):
        old = previous.models.get(ref) if previous else None
        models[ref] = (
            old
            if old and old.package.digest == package.digest
            else OnnxModel(package, threads, max_sub_batch)
        )
        key = TextEncoder.key_of(package)
        if key not in encoders:
            reuse = previous.encoders.get(key) if previous else None
            encoders[key] = reuse or TextEncoder(package)
    return Plan(strategy, models, encoders)


def config_plan(model_dir: Path, threads: int, max_sub_batch: int) -> Plan:
    """Serve one package for all its tasks as champion (strategy version 0): the no-Redis
    fallback."""
    package = load_package(model_dir)
    tasks = {t: TaskPlan(mode="champion", champion=package.ref) for t in package.heads}
    strategy = Strategy(
        version=0,
        tasks=tasks,
        updated_by="configuration",
        reason=f"ALLOCATOR_MODEL_DIR={model_dir}",
    )
    return build_plan(strategy, {package.ref: package}, None, threads, max_sub_batch)


def refusal_reason(exc: AllocationError) -> str:
    """The ``LOAD_FAILURE_REASONS`` label of a package refused with ``exc``."""
    if isinstance(exc, PackageError):
        return exc.reason if exc.reason in LOAD_FAILURE_REASONS else "unloadable"
    if isinstance(exc, UnknownModelError):
        return "not_registered"
    if isinstance(exc, RegistryError):
        return "fetch_failed"  # a registry entry whose source cannot be fetched
    return "unloadable"


class StrategyWatcher:
    """Follows the strategy in Redis (announcements, with a poll as a safety net) and publishes
    ``plan``."""

    def __init__(
        self,
        store: StrategyStore,
        registry: Registry,
        metrics: ConsumerMetrics,
        poll_s: float,
        threads: int,
        max_sub_batch: int = 1,
        fallback: Plan | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._metrics = metrics
        self._poll_s = poll_s
        self._threads = threads
        self._max_sub_batch = max_sub_batch
        self.plan: Plan | None = fallback
        if fallback is not None:
            self._publish_info(fallback)
        self.store_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="strategy-watcher", daemon=True)
        self._rejected_version = -1

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def refresh(self) -> None:
        """Read the strategy; build and swap in a new plan when its version changed. Never
        raises."""
        try:
            strategy = self._store.current()
            self._up(True)
        except StoreUnavailableError as exc:
            if self.store_up:
                log.warning(
                    "strategy store unavailable; serving the last good plan",
                    extra={"error": str(exc)},
                )
            self._up(False)
            return
        except AllocationError as exc:
            self._reject(-1, exc)
            return
        if strategy is None or (self.plan and self.plan.strategy.version == strategy.version):
            return
        if strategy.version == self._rejected_version:
            return
        try:
            plan = self._load(strategy)
        except AllocationError as exc:
            self._reject(strategy.version, exc)
            return
        self.plan = plan
        self._publish_info(plan)
        log.info(
            "strategy switched",
            extra={"strategy_version": strategy.version, "reason": strategy.reason},
        )

    def _load(self, strategy: Strategy) -> Plan:
        """Fetch, verify and load every model of ``strategy``. A refused package is counted by
        reason, then re-raised; Redis being down is not the package's fault and is not counted."""
        try:
            packages = {ref: self._registry.load(ref) for ref in sorted(strategy.models)}
            return build_plan(strategy, packages, self.plan, self._threads, self._max_sub_batch)
        except (ModelError, RegistryError) as exc:
            self._metrics.model_load_failures.labels(refusal_reason(exc)).inc()
            raise

    def _reject(self, version: int, exc: Exception) -> None:
        self._rejected_version = version
        self._metrics.strategy_rejected.inc()
        log.error(
            "strategy refused; keeping the last good plan",
            extra={"strategy_version": version, "error": str(exc)},
        )

    def _up(self, up: bool) -> None:
        self.store_up = up
        self._metrics.store_up.set(1 if up else 0)
        if up:
            self._metrics.strategy_refreshed.set(time.time())

    def _publish_info(self, plan: Plan) -> None:
        m = self._metrics
        m.strategy_version.set(plan.strategy.version)
        m.model_info.clear()
        m.model_expected.clear()  # a model no longer served stops being compared
        for task, tp in plan.strategy.tasks.items():
            arms = [("champion", tp.champion)]
            if tp.challenger:
                arms.append(("canary" if tp.mode == "canary" else "shadow", tp.challenger))
            for arm, ref in arms:
                pkg = plan.models[ref].package
                m.model_info.labels(task, arm, pkg.name, pkg.version, pkg.digest[:12]).set(1)
                for measure, value in pkg.expected(task).items():
                    m.model_expected.labels(task, pkg.version, measure).set(value)

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._store.subscribe()
                # an announcement wakes us at once; the timeout is the polling safety net
                pubsub.get_message(ignore_subscribe_messages=True, timeout=self._poll_s)
            except Exception:  # any pub/sub failure: drop the subscription, poll, resubscribe later
                pubsub = None
                self._stop.wait(self._poll_s)
            self.refresh()
