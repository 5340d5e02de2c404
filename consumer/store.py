"""Redis: the connection from settings, the one boundary where redis-py errors become ours, the
strategy store.

Strategy keys (under the prefix): ``strategy`` (the JSON document in force), ``strategy:history``
(previous documents, newest first, capped) and the pub/sub channel ``strategy:changed`` (payload:
the new version). Writes are compare-and-set on ``version``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, cast

import redis

from consumer import strategy
from consumer.errors import StoreUnavailableError, StrategyConflictError
from consumer.settings import CommonSettings
from consumer.strategy import Strategy, TaskPlan, next_doc, parse

if TYPE_CHECKING:
    from consumer.registry import Registry

HISTORY_LIMIT = 200


def connect(settings: CommonSettings) -> redis.Redis:
    """A Redis client with short timeouts: a slow or absent Redis must never stall the consumer
    loop."""
    kwargs: dict[str, object] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "health_check_interval": 15,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_ca_certs and settings.redis_url.startswith("rediss://"):
        kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return redis.Redis.from_url(settings.redis_url, **kwargs)


@contextlib.contextmanager
def map_redis_errors(what: str) -> Iterator[None]:
    """The one boundary where redis-py's connection errors (a refused or timed-out connection, a
    refused password) become ``StoreUnavailableError``, naming the settings to check."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        check = (
            "REDIS_PASSWORD"
            if isinstance(exc, redis.AuthenticationError)
            else "REDIS_URL and ALLOCATOR_REDIS_TIMEOUT_S"
            if isinstance(exc, redis.TimeoutError)
            else "REDIS_URL"
        )
        raise StoreUnavailableError(f"{what}: Redis unavailable: {exc} (check {check})") from exc


class StrategyStore:
    """The strategy document in Redis, validated against ``registry`` on every read and write."""

    def __init__(self, client: redis.Redis, prefix: str, registry: Registry) -> None:
        self._r = client
        self._registry = registry
        self.key = f"{prefix}strategy"
        self.history_key = f"{prefix}strategy:history"
        self.channel = f"{prefix}strategy:changed"

    def current(self) -> Strategy | None:
        """The strategy in force, validated against the registry (None when none was ever
        written)."""
        with map_redis_errors("strategy read"):
            raw = self._r.get(self.key)
        return None if raw is None else parse(json.loads(cast(bytes, raw)), self._registry.tasks_of)

    def subscribe(self) -> redis.client.PubSub:
        """A pub/sub subscription to change announcements (the payload is the new version)."""
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        return pubsub

    def history(self, limit: int = 20) -> list[Strategy]:
        """Previous documents, newest first (the current one is not included)."""
        with map_redis_errors("strategy history"):
            raws = self._r.lrange(self.history_key, 0, limit - 1)
        return [parse(json.loads(r)) for r in cast(list[bytes], raws)]

    def write(
        self, tasks: Mapping[str, TaskPlan], expected_version: int, reason: str, who: str
    ) -> Strategy:
        """Replace the strategy if its version is still ``expected_version`` (0: none yet); announce
        it.

        Raises ``StrategyConflictError`` when somebody wrote first, ``StrategyValidationError`` when
        refused.
        """
        current = self.current()
        version = current.version if current else 0
        if version != expected_version:
            raise StrategyConflictError(f"strategy is at version {version}, not {expected_version}")
        doc = next_doc(current, tasks, reason, who)
        new = parse(doc, self._registry.tasks_of)
        payload = json.dumps(doc, sort_keys=True)

        def txn(pipe: redis.client.Pipeline) -> None:
            raw = cast(bytes | None, pipe.get(self.key))
            seen = json.loads(raw)["version"] if raw else 0
            if seen != expected_version:
                raise StrategyConflictError(f"strategy moved to version {seen} during the write")
            pipe.multi()
            if raw:
                pipe.lpush(self.history_key, raw)
                pipe.ltrim(self.history_key, 0, HISTORY_LIMIT - 1)
            pipe.set(self.key, payload)
            pipe.publish(self.channel, str(new.version))

        with map_redis_errors("strategy write"):
            try:
                self._r.transaction(txn, self.key)
            except redis.WatchError as exc:
                raise StrategyConflictError(
                    "strategy changed during the write; read it again"
                ) from exc
        return new

    def update(
        self,
        change: Callable[[Strategy | None], Mapping[str, TaskPlan]],
        reason: str,
        who: str,
        attempts: int = 5,
    ) -> Strategy:
        """Read-modify-write with retries on conflict: ``change`` maps the current strategy to new
        tasks."""
        for _ in range(attempts):
            current = self.current()
            try:
                return self.write(change(current), current.version if current else 0, reason, who)
            except StrategyConflictError:
                continue
        raise StrategyConflictError(f"gave up after {attempts} conflicting writes")

    def rollback(self, reason: str, who: str) -> Strategy:
        """Write the previous document's tasks again as a new version (history stays
        append-only)."""
        previous = self.history(1)
        tasks = strategy.rollback(previous[0] if previous else None)
        current = self.current()
        assert current is not None  # a history implies a current document
        return self.write(tasks, current.version, reason, who)
