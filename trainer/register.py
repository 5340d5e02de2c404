"""Register a trained package in the Redis model registry (``consumer.registry``) so it can be named
as a challenger (canary or shadow) in the strategy. Registration only records the verified package;
putting it into an experiment is a strategy write (``allocator strategy ...`` or the promoter),
never the trainer's.

The location is a folder or a pinned ``hf://owner/repo@<commit>`` ref. Consumer pods must be able to
read it: in a cluster that means a hub ref (``trainer.push.push_to_hub``), not the trainer pod's
own disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumer import store
from consumer.registry import Registry
from consumer.settings import CommonSettings, load


def register(
    location: Path | str, settings: CommonSettings | None = None, client: Any | None = None
) -> dict[str, Any]:
    """Verify and register the package at ``location``; idempotent for the same package, refused for
    a changed one.

    ``location`` is a folder or an ``hf://`` ref; a hub ref is fetched into
    ``settings.model_cache_dir`` first.

    ``client`` (a redis-py compatible client, e.g. fakeredis in tests) defaults to one built from
    settings.
    """
    settings = settings or load(CommonSettings)
    client = client if client is not None else store.connect(settings)
    registry = Registry(
        client,
        settings.redis_prefix,
        settings.model_cache_dir,
        bool(getattr(settings, "hub_offline", False)),
    )
    # str, not Path: Path("hf://o/r@c") would fold the "//"; the registry resolves folders itself
    entry = registry.register(str(location))
    return {
        "ref": entry.ref,
        "digest": entry.digest,
        "source": entry.source,
        "registered_at": entry.registered_at,
    }
