"""The circuit breaker of the hot loop: when the model fails on most recent records, hold the input
rather than send it all to the DLQ.

A model that passes its digest check can still fail at inference on every record (a graph that
does not fit the runtime, an exhausted resource). Without a breaker the loop would dead-letter the
whole stream while committing its offsets: the stream "succeeds" at losing its work to the DLQ.

States:
- **closed**: batches are committed. Each batch's model failures and scored records join a sliding
  window of the last ``window`` scored records; when the window holds at least ``min_records`` and
  its failure share reaches ``ratio``, the breaker **opens** and the batch that tipped it is *not*
  committed (the loop rewinds it).
- **open**: the loop pauses its partitions and commits nothing. It stays a group member (it keeps
  polling), its readiness is false and ``allocator_circuit_breaker_open`` is 1.
- It **closes** when a new plan arrives (a strategy change or rollback: the usual fix), or it goes
  **half-open** after ``cooldown_s`` to try one batch on the same plan (a transient fault). A trial
  batch whose failure share is below ``ratio`` closes the breaker and is committed; otherwise it is
  rewound and the breaker opens again for another cooldown.

Only model failures count: bad input (not JSON, schema violations) is the producer's fault, goes to
the DLQ and never trips the breaker. This module does no I/O; the loop acts on its answers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerConfig:
    ratio: float  # failure share that opens the breaker, in (0, 1]
    min_records: int  # no decision on fewer scored records than this
    window: int  # scored records the share is computed over
    cooldown_s: float  # open this long before a trial batch on the same plan


class Breaker:
    """Decides, per batch, whether the loop may commit. ``clock`` is ``time.monotonic`` unless a
    test gives another."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.state: State = "closed"
        self.reason = ""
        self.plan: object | None = None  # the plan in force when it opened
        self._opened_at = 0.0
        self._window: deque[tuple[int, int]] = deque()  # (failures, scored) per batch
        self._failures = 0
        self._scored = 0

    @property
    def holding(self) -> bool:
        """True while the loop must not consume (open, cooldown not over)."""
        if self.state != "open":
            return False
        if self.clock() - self._opened_at >= self.config.cooldown_s:
            self.state = "half_open"
            return False
        return True

    def admit(self, failures: int, scored: int, plan: object) -> bool:
        """A routed batch: ``failures`` of its ``scored`` records failed in the model. True: commit
        it. False: the breaker is (again) open, rewind the batch."""
        if self.state == "half_open":
            if scored and failures / scored >= self.config.ratio:
                self._open(failures, scored, plan)
                return False
            self.close()
            return True
        self._push(failures, scored)
        cfg = self.config
        if self._scored >= cfg.min_records and self._failures / self._scored >= cfg.ratio:
            self._open(self._failures, self._scored, plan)
            return False
        return True

    def resumes_with(self, plan: object | None) -> bool:
        """A new plan object while open closes the breaker: True when it did."""
        if self.state == "closed" or plan is None or plan is self.plan:
            return False
        self.close()
        return True

    def close(self) -> None:
        self.state = "closed"
        self.reason = ""
        self.plan = None
        self._window.clear()
        self._failures = self._scored = 0

    def _push(self, failures: int, scored: int) -> None:
        self._window.append((failures, scored))
        self._failures += failures
        self._scored += scored
        # drop whole batches from the front while the rest still fills the window
        while len(self._window) > 1 and self._scored - self._window[0][1] >= self.config.window:
            old_failures, old_scored = self._window.popleft()
            self._failures -= old_failures
            self._scored -= old_scored

    def _open(self, failures: int, scored: int, plan: object) -> None:
        self.state = "open"
        self.plan = plan
        self._opened_at = self.clock()
        self.reason = (
            f"circuit breaker open: the model failed on {failures} of the last {scored} records "
            f"(threshold {self.config.ratio:.0%}); input held, nothing committed; a new strategy "
            f"resumes it, or a trial batch in {self.config.cooldown_s:.0f}s"
        )
