"""Argument values several commands share: times and durations given on the command line, as
milliseconds (Kafka's unit for record times). A value that is neither is a ``ConfigError`` naming
its flag."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from consumer.errors import ConfigError

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, flag: str) -> int:
    """Milliseconds since the epoch from RFC 3339 / ISO 8601 (UTC when no offset is given), or
    from a number of milliseconds."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: not a time (RFC 3339 such as 2026-11-30T08:00:00Z, or epoch ms)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_duration(text: str, flag: str) -> int:
    """Milliseconds from ``30m``, ``6h``, ``2d``, ``90s``."""
    m = DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"{flag} {text!r}: not a duration (such as 90s, 30m, 6h, 2d)")
    return int(float(m[1]) * UNIT_MS[m[2]])
