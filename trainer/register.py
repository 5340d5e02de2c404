"""Register a trained package in the Redis model registry (``consumer.registry``) so it can be named as a
challenger (canary or shadow) in the strategy. Registration only records the verified package; putting it
into an experiment is a strategy write (``allocator strategy ...`` or the promoter), never the trainer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumer import store
from consumer.registry import Registry
from consumer.settings import CommonSettings, load


def register(folder: Path, settings: CommonSettings | None = None, client: Any | None = None) -> dict[str, Any]:
    """Verify and register ``folder``; idempotent for the same package, refused for a changed one.

    ``client`` (a redis-py compatible client, e.g. fakeredis in tests) defaults to one built from settings.
    """
    settings = settings or load(CommonSettings)
    client = client if client is not None else store.connect(settings)
    registry = Registry(
        client, settings.redis_prefix, settings.model_cache_dir, bool(getattr(settings, "hub_offline", False))
    )
    entry = registry.register(str(Path(folder).resolve()))
    return {"ref": entry.ref, "digest": entry.digest, "source": entry.source, "registered_at": entry.registered_at}
