"""The circuit breaker's decisions, with a fake clock: window, minimum, plan change, cooldown."""

from __future__ import annotations

from consumer.breaker import Breaker, BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock | None = None) -> Breaker:
    return Breaker(
        BreakerConfig(ratio=0.5, min_records=10, window=20, cooldown_s=30.0), clock or Clock()
    )


PLAN, NEW_PLAN = object(), object()


def test_no_decision_below_the_minimum() -> None:
    b = breaker()
    assert b.admit(9, 9, PLAN)  # all failed, but only 9 records scored
    assert not b.admit(1, 1, PLAN)  # the tenth tips it
    assert b.state == "open" and b.plan is PLAN


def test_the_share_is_over_a_sliding_window() -> None:
    b = breaker()
    for _ in range(4):
        assert b.admit(0, 10, PLAN)  # 40 good records, of which the window keeps the last 20
    assert b.admit(9, 10, PLAN)  # 9 of 20 = 45%
    assert not b.admit(10, 10, PLAN)  # 19 of 20 once the old good batch left the window
    assert "19 of the last 20" in b.reason


def test_a_new_plan_closes_it_the_same_plan_does_not() -> None:
    b = breaker()
    assert not b.admit(10, 10, PLAN)
    assert not b.resumes_with(PLAN) and not b.resumes_with(None)
    assert b.holding
    assert b.resumes_with(NEW_PLAN)
    assert b.state == "closed" and not b.holding
    assert b.admit(4, 10, NEW_PLAN)  # the window started again


def test_half_open_after_the_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    assert not b.admit(10, 10, PLAN)
    clock.now = 29.9
    assert b.holding
    clock.now = 30.0
    assert not b.holding and b.state == "half_open"
    assert not b.admit(5, 10, PLAN)  # 50%: open again for another cooldown
    assert b.state == "open" and b.holding
    clock.now = 60.0
    assert not b.holding
    assert b.admit(1, 10, PLAN) and b.state == "closed"
