"""The demo's phases, timed: each one's wall time, its complaints and what became of them (taken
when it ends), and its measured end-to-end latency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from demo.traffic import Traffic


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    latency: tuple[float | None, float | None, int] = (None, None, 0)
    notes: list[str] = field(default_factory=list)  # what the report says about it


@dataclass
class Phases:
    traffic: Traffic
    done: list[Phase] = field(default_factory=list)

    @contextmanager
    def run(self, name: str) -> Iterator[Phase]:
        """Time the block as phase ``name``; complaints sent in it are counted in it."""
        phase, started = Phase(name), time.monotonic()
        self.traffic.phase = name
        try:
            yield phase
        finally:
            phase.seconds = time.monotonic() - started
            phase.counts = self.traffic.counts(name)
            phase.latency = self.traffic.quantiles(name)
            self.done.append(phase)

    def get(self, name: str) -> Phase | None:
        return next((p for p in self.done if p.name == name), None)
