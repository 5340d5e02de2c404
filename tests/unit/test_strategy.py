from __future__ import annotations

from typing import Any

import pytest

from consumer import strategy as transitions
from consumer.errors import StrategyError, StrategyValidationError
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
    assert {i for i in ids if small.arm(i) == "canary"} <= {
        i for i in ids if big.arm(i) == "canary"
    }


def test_salt_changes_assignment() -> None:
    ids = [str(i) for i in range(2000)]
    assert [bucket("a", i) for i in ids] != [bucket("b", i) for i in ids]


def test_shadow_sample() -> None:
    plan = TaskPlan("shadow", "m@1", "m@2", sample=0.25, salt="s")
    share = sum(plan.shadowed(str(i)) for i in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.02
    assert all(plan.arm(str(i)) == "champion" for i in range(100)), (
        "shadow never publishes the challenger"
    )


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            {
                "team": {
                    "mode": "canary",
                    "champion": "m@1",
                    "challenger": "m@2",
                    "weight": 1.5,
                    "salt": "s",
                }
            },
            "weight",
        ),
        (
            {
                "team": {
                    "mode": "canary",
                    "champion": "m@1",
                    "challenger": "x@9",
                    "weight": 0.5,
                    "salt": "s",
                }
            },
            "not registered",
        ),
        ({"issue": {"mode": "champion", "champion": "n@1"}}, "has no 'issue' head"),
        (
            {
                "team": {
                    "mode": "shadow",
                    "champion": "m@1",
                    "challenger": "m@1",
                    "sample": 1,
                    "salt": "s",
                }
            },
            "both",
        ),
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
        doc(
            team={
                "mode": "canary",
                "champion": "m@1",
                "challenger": "m@2",
                "weight": 0.2,
                "salt": "s",
            }
        ),
        HEADS.get,
    )
    again = parse(s.to_doc(), HEADS.get)
    assert again == s
    nxt = next_doc(s, s.tasks, "why", "who")
    assert nxt["version"] == 2 and parse(nxt, HEADS.get).tasks == s.tasks


# --- transitions: pure functions from the strategy in force to the new
# plans -------------------------------

ALL = ("issue", "team", "vulnerable")
CANARY_ON_TEAM = {
    "mode": "canary",
    "champion": "m@1",
    "challenger": "m@2",
    "weight": 0.1,
    "salt": "s",
}


def test_the_first_champion_takes_every_task_of_its_model() -> None:
    tasks = transitions.champion(None, "m@1", ALL)
    assert tasks == {t: TaskPlan("champion", "m@1") for t in ALL}


def test_a_champion_replaces_only_the_tasks_both_have_and_ends_their_experiments() -> None:
    current = parse(doc(team=CANARY_ON_TEAM))
    tasks = transitions.champion(current, "n@1", ("team", "extra"))
    assert tasks["team"] == TaskPlan("champion", "n@1")
    assert tasks["issue"] == TaskPlan("champion", "m@1")
    assert "extra" not in tasks  # a new task is added only when named


def test_canary_and_shadow_keep_the_champion_and_salt_by_challenger() -> None:
    current = parse(doc())
    canaried = transitions.canary(current, "m@2", 0.25)
    assert set(canaried) == set(ALL)
    assert canaried["issue"] == TaskPlan("canary", "m@1", "m@2", weight=0.25, salt="canary:m@2")
    shadowed = transitions.shadow(current, "m@2", 0.5, task="team")
    assert shadowed["team"] == TaskPlan("shadow", "m@1", "m@2", sample=0.5, salt="shadow:m@2")
    assert shadowed["issue"] == TaskPlan("champion", "m@1")


def test_promote_moves_the_challenger_up_and_skips_tasks_without_an_experiment() -> None:
    current = parse(doc(team=CANARY_ON_TEAM))
    tasks = transitions.promote(current)
    assert tasks["team"] == TaskPlan("champion", "m@2")
    assert tasks["issue"] == TaskPlan("champion", "m@1")
    with pytest.raises(StrategyError, match="runs no experiment"):
        transitions.promote(current, task="issue")


def test_end_keeps_the_champion() -> None:
    current = parse(
        doc(
            team={
                "mode": "shadow",
                "champion": "m@1",
                "challenger": "m@2",
                "sample": 1.0,
                "salt": "s",
            }
        )
    )
    assert transitions.end(current)["team"] == TaskPlan("champion", "m@1")


@pytest.mark.parametrize(
    "move",
    [
        lambda cur: transitions.canary(cur, "m@2", 0.1),
        lambda cur: transitions.shadow(cur, "m@2"),
        transitions.promote,
        transitions.end,
    ],
)
def test_experiments_need_a_strategy(move: Any) -> None:
    with pytest.raises(StrategyError, match="no strategy yet"):
        move(None)


def test_a_named_task_must_be_in_the_strategy() -> None:
    with pytest.raises(StrategyError, match="not in the strategy"):
        transitions.canary(parse(doc()), "m@2", 0.1, task="nope")


def test_rollback_returns_the_previous_plans_or_refuses() -> None:
    previous = parse(doc())
    assert transitions.rollback(previous) == dict(previous.tasks)
    with pytest.raises(StrategyError, match="no previous strategy"):
        transitions.rollback(None)
