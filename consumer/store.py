"""Redis connection from settings, and the one boundary where redis-py errors become our errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from consumer.errors import StoreUnavailableError
from consumer.settings import CommonSettings


def connect(settings: CommonSettings) -> redis.Redis:
    """A Redis client with short timeouts: a slow or absent Redis must never stall the consumer loop."""
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
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailableError(f"{what}: Redis unavailable: {exc}") from exc
