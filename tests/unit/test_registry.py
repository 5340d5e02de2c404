from __future__ import annotations

import shutil
from pathlib import Path

import fakeredis
import pytest

from consumer.errors import (
    IntegrityError,
    PackageError,
    RegistryError,
    StrategyConflictError,
    StrategyError,
    StrategyValidationError,
)
from consumer.package import load_package
from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan


@pytest.fixture
def stores() -> tuple[Registry, StrategyStore]:
    r = fakeredis.FakeRedis()
    registry = Registry(r, "t:")
    return registry, StrategyStore(r, "t:", registry)


def test_register_is_idempotent_and_versions_are_immutable(
    stores, tiny: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    registry, _ = stores
    first = registry.register(str(tiny))
    assert first.ref == "tiny-minilm@tiny-s0"
    assert registry.register(str(tiny)).digest == first.digest
    other = shutil.copytree(tiny, tmp_path / "other")
    manifest = (
        (other / "manifest.json").read_text().replace('"Random weights', '"Other random weights')
    )
    (other / "manifest.json").write_text(manifest)
    with pytest.raises(RegistryError, match="immutable"):
        registry.register(str(other))
    assert [e.ref for e in registry.list()] == [first.ref]


def test_a_changed_byte_is_refused_naming_file_and_digests(
    stores, tiny: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    registry, _ = stores
    copy = shutil.copytree(tiny, tmp_path / "pkg")
    entry = registry.register(str(copy))
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        registry.load(entry.ref)
    message = str(info.value)
    assert "model.onnx" in message and entry.manifest["files"]["model.onnx"] in message
    with pytest.raises(IntegrityError):
        load_package(copy)


def test_strategy_cas_history_and_rollback(stores, tiny: Path, tiny2: Path) -> None:  # type: ignore[no-untyped-def]
    registry, store = stores
    a, b = registry.register(str(tiny)).ref, registry.register(str(tiny2)).ref
    assert store.current() is None
    tasks = {t: TaskPlan("champion", a) for t in ("team", "issue", "vulnerable")}
    v1 = store.write(tasks, 0, "first", "test")
    assert v1.version == 1
    with pytest.raises(StrategyConflictError):
        store.write(tasks, 0, "stale writer", "test")
    v2 = store.write(
        {**tasks, "team": TaskPlan("canary", a, b, weight=0.1, salt="s")}, 1, "canary", "test"
    )
    assert store.current() == v2 and v2.version == 2
    assert [s.version for s in store.history()] == [1]
    v3 = store.rollback("undo", "test")
    assert v3.version == 3 and v3.tasks == v1.tasks and v3.reason == "undo"
    with pytest.raises(StrategyValidationError, match="not registered"):
        store.write({**tasks, "team": TaskPlan("champion", "ghost@1")}, 3, "bad", "test")
    assert store.current().version == 3  # type: ignore[union-attr]


def test_rollback_without_history(stores) -> None:  # type: ignore[no-untyped-def]
    _, store = stores
    with pytest.raises(StrategyError, match="no previous"):
        store.rollback("why", "who")


def test_changes_are_announced(stores, tiny: Path) -> None:  # type: ignore[no-untyped-def]
    registry, store = stores
    a = registry.register(str(tiny)).ref
    sub = store.subscribe()
    store.write(
        {t: TaskPlan("champion", a) for t in ("team", "issue", "vulnerable")}, 0, "first", "test"
    )
    # the first read may consume the subscription confirmation (returned as None)
    msg = sub.get_message(timeout=1) or sub.get_message(timeout=1)
    assert msg is not None and msg["data"] == b"1"
    sub.close()


def test_hub_packages_are_pinned_and_resolved_through_the_hub_client(
    tiny: Path, tmp_path: Path
) -> None:
    """hf://owner/repo@<commit> goes through huggingface_hub.snapshot_download; here from a local
    cache laid out as the hub client writes it (no hub is reachable), so the real resolution code
    runs."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "cache" / "models--bank--complaints-tiny" / "snapshots" / commit
    shutil.copytree(tiny, snapshot)
    registry = Registry(fakeredis.FakeRedis(), "t:", cache_dir=tmp_path / "cache", hub_offline=True)
    entry = registry.register(f"hf://bank/complaints-tiny@{commit}")
    assert entry.source == {"kind": "hub", "repo": "bank/complaints-tiny", "commit": commit}
    assert registry.load(entry.ref).digest == load_package(tiny).digest
    with pytest.raises(RegistryError, match="pinned"):
        registry.register("hf://bank/complaints-tiny@main")
    with pytest.raises(PackageError, match="cannot fetch"):
        registry.register("hf://bank/complaints-tiny@" + "f" * 40)
