from __future__ import annotations

from typing import Any

import pytest

from consumer.errors import StrategyValidationError
from consumer.strategy import TaskPlan, bucket, next_doc, parse

HEADS = {
    "m@1": {"team": {}, "issue": {}, "vulnerable": {}},
    "m@2": {"team": {}, "issue": {}, "vulnerable": {}},
    "n@1": {"team": {}},
}


def doc(**tasks: dict[str, Any]) -> dict[str, Any]:
    base = {t: {"mode": "champion", "champion": "m@1"} for t in ("team", "issue", "vulnerable")}
    return {
        "schema": "strategy/v1",
        "version": 1,
        "updated_at": "2026-01-01T00:00:00Z",
        "updated_by": "me",
        "reason": "test",
        "tasks": {**base, **tasks},
    }


def test_canary_share_is_exact_and_sticky() -> None:
    plan = TaskPlan("canary", "m@1", "m@2", weight=0.1, salt="canary:m@2")
    ids = [f"complaint-{i}" for i in range(50_000)]
    arms = [plan.arm(i) for i in ids]
    share = arms.count("canary") / len(ids)
    assert abs(share - 0.10) < 0.005, share
    assert arms == [plan.arm(i) for i in ids], "assignment must be deterministic"


def test_raising_the_weight_keeps_canary_members() -> None:
    small = TaskPlan("canary", "m@1", "m@2", weight=0.1, salt="s")
    big = TaskPlan("canary", "m@1", "m@2", weight=0.3, salt="s")
    ids = [str(i) for i in range(5000)]
    assert {i for i in ids if small.arm(i) == "canary"} <= {i for i in ids if big.arm(i) == "canary"}


def test_salt_changes_assignment() -> None:
    ids = [str(i) for i in range(2000)]
    assert [bucket("a", i) for i in ids] != [bucket("b", i) for i in ids]


def test_shadow_sample() -> None:
    plan = TaskPlan("shadow", "m@1", "m@2", sample=0.25, salt="s")
    share = sum(plan.shadowed(str(i)) for i in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.02
    assert all(plan.arm(str(i)) == "champion" for i in range(100)), "shadow never publishes the challenger"


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ({"team": {"mode": "canary", "champion": "m@1", "challenger": "m@2", "weight": 1.5, "salt": "s"}}, "weight"),
        (
            {"team": {"mode": "canary", "champion": "m@1", "challenger": "x@9", "weight": 0.5, "salt": "s"}},
            "not registered",
        ),
        ({"issue": {"mode": "champion", "champion": "n@1"}}, "has no 'issue' head"),
        ({"team": {"mode": "shadow", "champion": "m@1", "challenger": "m@1", "sample": 1, "salt": "s"}}, "both"),
        ({"team": {"mode": "blue", "champion": "m@1"}}, "invalid strategy"),
    ],
)
def test_bad_documents_are_refused(tasks: dict[str, Any], message: str) -> None:
    with pytest.raises(StrategyValidationError, match=message):
        parse(doc(**tasks), HEADS.get)


def test_routing_tasks_are_required() -> None:
    d = doc()
    del d["tasks"]["vulnerable"]
    with pytest.raises(StrategyValidationError, match="'vulnerable' is required"):
        parse(d, HEADS.get)


def test_round_trip_and_next_version() -> None:
    s = parse(
        doc(team={"mode": "canary", "champion": "m@1", "challenger": "m@2", "weight": 0.2, "salt": "s"}), HEADS.get
    )
    again = parse(s.to_doc(), HEADS.get)
    assert again == s
    nxt = next_doc(s, s.tasks, "why", "who")
    assert nxt["version"] == 2 and parse(nxt, HEADS.get).tasks == s.tasks
