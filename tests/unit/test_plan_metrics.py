"""What the strategy watcher tells Prometheus about the packages it loads: the served models'
manifest figures (``allocator_model_expected_ratio``) and every refused package, by reason
(``allocator_model_load_failures_total``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from consumer.errors import (
    LOAD_FAILURE_REASONS,
    IntegrityError,
    PackageError,
    RegistryError,
    StrategyError,
    UnknownModelError,
)
from consumer.metrics import ConsumerMetrics
from consumer.plan import Plan, StrategyWatcher, config_plan, refusal_reason
from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan
from tests.tiny_packages import copy_package, with_validation_figures

TASKS = ("team", "issue", "vulnerable")
EXPECTED = "allocator_model_expected_ratio"
FAILURES = "allocator_model_load_failures_total"


class World:
    """A registry and strategy store on fake Redis, and a watcher over them."""

    def __init__(self, fallback: Plan | None = None) -> None:
        client = fakeredis.FakeRedis()
        self.registry = Registry(client, "t:")
        self.store = StrategyStore(client, "t:", self.registry)
        self.prom = CollectorRegistry()
        self.watcher = StrategyWatcher(
            self.store, self.registry, ConsumerMetrics(self.prom), 60.0, 1, fallback=fallback
        )

    def serve(self, champion: Path, challenger: Path | None = None) -> None:
        """Register the packages, write a strategy (challenger as a team canary) and refresh."""
        ref = self.registry.register(str(champion)).ref
        tasks = {t: TaskPlan("champion", ref) for t in TASKS}
        if challenger is not None:
            other = self.registry.register(str(challenger)).ref
            tasks["team"] = TaskPlan("canary", ref, other, weight=0.1, salt="s")
        current = self.store.current()
        self.store.write(tasks, current.version if current else 0, "test", "test")
        self.watcher.refresh()

    def expected(self) -> dict[tuple[str, str, str], float]:
        return {
            (s.labels["task"], s.labels["model_version"], s.labels["measure"]): s.value
            for family in self.prom.collect()
            if family.name == EXPECTED
            for s in family.samples
        }

    def failures(self) -> dict[str, float]:
        return {
            r: self.prom.get_sample_value(FAILURES, {"reason": r}) or 0.0
            for r in LOAD_FAILURE_REASONS
        }


def test_a_published_plan_exports_the_figures_its_manifests_have(
    tiny: Path, tiny2: Path, tmp_path: Path
) -> None:
    world = World()
    world.serve(with_validation_figures(tiny, tmp_path / "figures", 0.8, 0.6), challenger=tiny2)
    # the tiny canary (tiny-s1) has no figures: nothing to compare its live accuracy with
    assert world.expected() == {
        ("team", "tiny-s0", "accuracy"): 0.8,
        ("issue", "tiny-s0", "accuracy"): 0.8,
        ("vulnerable", "tiny-s0", "accuracy"): 0.8,
        ("vulnerable", "tiny-s0", "recall"): 0.6,
        # the targets its (made-up) guarantees hold
        ("team", "tiny-s0", "guaranteed_accuracy"): 0.8,
        ("issue", "tiny-s0", "guaranteed_accuracy"): 0.8,
        ("vulnerable", "tiny-s0", "guaranteed_recall"): 0.6,
    }
    world.serve(tiny2)  # a model no longer served is no longer expected to do anything
    assert world.expected() == {}


def test_the_configured_fallback_plan_is_published_too(tiny: Path, tmp_path: Path) -> None:
    world = World(config_plan(with_validation_figures(tiny, tmp_path / "figures", 0.7, 0.5), 1, 1))
    assert world.expected()[("vulnerable", "tiny-s0", "recall")] == 0.5
    assert world.prom.get_sample_value("allocator_strategy_version") == 0


def test_every_reason_exists_at_zero_from_start_up() -> None:
    assert World().failures() == dict.fromkeys(LOAD_FAILURE_REASONS, 0.0)


def _flip_a_byte(pkg: Path) -> None:
    onnx = pkg / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_a_byte, "digest_mismatch"),
        (lambda pkg: (pkg / "tokenizer.json").unlink(), "missing_file"),
        (lambda pkg: (pkg / "manifest.json").unlink(), "missing_file"),
        (lambda pkg: (pkg / "manifest.json").write_text("{not json"), "bad_manifest"),
    ],
)
def test_a_refused_package_is_counted_once_by_reason(
    damage: Callable[[Path], None], reason: str, tiny: Path, tmp_path: Path
) -> None:
    world = World()
    pkg = copy_package(tiny, tmp_path / "pkg")
    ref = world.registry.register(str(pkg)).ref
    damage(pkg)
    world.store.write({t: TaskPlan("champion", ref) for t in TASKS}, 0, "test", "test")
    world.watcher.refresh()
    world.watcher.refresh()  # a refused strategy version is not retried, so not counted again
    assert world.watcher.plan is None
    assert world.failures() == {**dict.fromkeys(LOAD_FAILURE_REASONS, 0.0), reason: 1.0}
    assert world.prom.get_sample_value("allocator_strategy_rejected_total") == 1


def test_refusal_reasons_stay_in_the_bounded_set() -> None:
    assert refusal_reason(IntegrityError("x")) == "digest_mismatch"
    assert refusal_reason(PackageError("x")) == "unloadable"
    assert refusal_reason(PackageError("x", "missing_file")) == "missing_file"
    assert refusal_reason(PackageError("x", "made_up")) == "unloadable"
    assert refusal_reason(UnknownModelError("x")) == "not_registered"
    assert refusal_reason(RegistryError("x")) == "fetch_failed"
    assert refusal_reason(StrategyError("x")) == "unloadable"
