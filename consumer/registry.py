"""The model registry in Redis (DESIGN section 3): verified manifests and where each package lives.

Keys (under the configured prefix): ``models`` is a hash from ``name@version`` to a JSON entry
``{"manifest", "digest", "source", "registered_at"}``. Versions are immutable: registering the same
ref with another digest is refused. A source is a local folder, or ``hf://owner/repo@<commit>`` (a
Hugging Face Hub repo pinned by commit), fetched with ``huggingface_hub.snapshot_download`` into the
model cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis

from consumer.errors import PackageError, RegistryError, UnknownModelError
from consumer.package import ModelPackage, load_package
from consumer.store import map_redis_errors

HUB_REF = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)@(?P<commit>[0-9a-f]{40})$")


@dataclass(frozen=True)
class ModelEntry:
    ref: str
    digest: str
    source: dict[str, str]
    manifest: dict[str, Any]
    registered_at: str

    @property
    def tasks(self) -> dict[str, Any]:
        return dict(self.manifest["tasks"])


def fetch(source: dict[str, str], cache_dir: Path, offline: bool = False) -> Path:
    """The local folder of a package source (downloads a hub repo at its pinned commit when
    needed)."""
    if source["kind"] == "path":
        return Path(source["path"])
    if source["kind"] == "hub":
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(
                    repo_id=source["repo"],
                    revision=source["commit"],
                    cache_dir=str(cache_dir),
                    local_files_only=offline,
                )
            )
        except (
            Exception
        ) as exc:  # huggingface_hub raises many unrelated types; all mean "not fetched"
            raise PackageError(
                f"hf://{source['repo']}@{source['commit']}: cannot fetch: {exc}", "fetch_failed"
            ) from exc
    raise RegistryError(f"unknown package source kind {source['kind']!r}")


def parse_source(location: str) -> dict[str, str]:
    if location.startswith("hf://"):
        m = HUB_REF.match(location)
        if not m:
            raise RegistryError(
                f"{location}: hub refs must be hf://owner/repo@<40-hex commit> (pinned)"
            )
        return {"kind": "hub", "repo": m["repo"], "commit": m["commit"]}
    path = Path(location).resolve()
    if not path.is_dir():
        raise RegistryError(f"{location}: not a folder (and not an hf:// ref)")
    return {"kind": "path", "path": str(path)}


class Registry:
    """Register, list and resolve model versions; every load verifies the package digests."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        cache_dir: Path = Path(".cache/models"),
        hub_offline: bool = False,
    ) -> None:
        self._r = client
        self._key = f"{prefix}models"
        self._cache_dir = cache_dir
        self._offline = hub_offline

    def register(self, location: str) -> ModelEntry:
        """Verify the package at ``location`` and record it; idempotent for an identical package."""
        source = parse_source(location)
        package = load_package(fetch(source, self._cache_dir, self._offline))
        entry = ModelEntry(
            package.ref,
            package.digest,
            source,
            package.manifest,
            datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        value = json.dumps(
            {
                "digest": entry.digest,
                "source": source,
                "manifest": entry.manifest,
                "registered_at": entry.registered_at,
            }
        )
        with map_redis_errors("register"):
            if not self._r.hsetnx(self._key, entry.ref, value):
                old = self.get(entry.ref)
                if old.digest != entry.digest:
                    raise RegistryError(
                        f"{entry.ref} is already registered with digest {old.digest}; versions are "
                        "immutable, "
                        f"publish a new version instead of {entry.digest}"
                    )
                return old
        return entry

    def get(self, ref: str) -> ModelEntry:
        with map_redis_errors("registry read"):
            raw = self._r.hget(self._key, ref)
        if raw is None:
            raise UnknownModelError(f"model {ref} is not registered")
        doc = json.loads(cast(bytes, raw))
        return ModelEntry(ref, doc["digest"], doc["source"], doc["manifest"], doc["registered_at"])

    def find(self, ref: str) -> ModelEntry | None:
        try:
            return self.get(ref)
        except UnknownModelError:
            return None

    def list(self) -> list[ModelEntry]:
        with map_redis_errors("registry list"):
            refs = sorted(k.decode() for k in cast(list[bytes], self._r.hkeys(self._key)))
        return [self.get(r) for r in refs]

    def tasks_of(self, ref: str) -> dict[str, Any] | None:
        entry = self.find(ref)
        return None if entry is None else entry.tasks

    def load(self, ref: str) -> ModelPackage:
        """Fetch and verify ``ref`` against the digest recorded at registration (raises
        IntegrityError)."""
        entry = self.get(ref)
        return load_package(
            fetch(entry.source, self._cache_dir, self._offline), expected_digest=entry.digest
        )
