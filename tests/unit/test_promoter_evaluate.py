"""Experiments and decisions on fakeredis: keying, start versions, recommend-only versus apply,
acting once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import numpy as np
import pytest

from consumer import strategy as transitions
from consumer.registry import Registry
from consumer.store import StrategyStore
from consumer.strategy import TaskPlan
from promoter.evaluate import Evaluator, Policy, Verdict, first_decision
from promoter.experiments import Experiment, running
from promoter.sequential import ArmStats, Discordance, decide
from promoter.state import JoinStore, Keys
from promoter.status import status
from tests.unit.test_promoter_join import canary, shadow, strategy

PREFIX = "t:"
ARM_FIELDS = ("n", "correct", "vulnerable_positives", "vulnerable_flagged")


@pytest.fixture
def r() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    for ref in ("m@1", "m@2", "m@3"):  # registry entries, as Registry.register writes them
        entry = {
            "digest": "0" * 64,
            "source": {"kind": "path", "path": "/nowhere"},
            "manifest": {"tasks": {"team": {}, "issue": {}, "vulnerable": {}}},
            "registered_at": "2026-01-01T00:00:00Z",
        }
        client.hset(f"{PREFIX}models", ref, json.dumps(entry))
    yield client
    client.close()


@pytest.fixture
def strategies(r: fakeredis.FakeRedis) -> StrategyStore:
    store = StrategyStore(r, PREFIX, Registry(r, PREFIX))
    store.update(
        lambda cur: transitions.champion(cur, "m@1", ("team", "issue", "vulnerable")),
        "start",
        "test",
    )
    return store


def start(
    store: StrategyStore, action: str, task: str = "team", model: str = "m@2", weight: float = 0.5
) -> Experiment:
    move = {"canary": transitions.canary, "shadow": transitions.shadow}[action]
    new = store.update(
        lambda cur: move(cur, model, weight if action == "canary" else 1.0, task), action, "test"
    )
    return running(new, store.history(50))[task]


def put_counts(
    r: fakeredis.FakeRedis, exp: Experiment, champion: tuple[int, ...], challenger: tuple[int, ...]
) -> None:
    fields: dict[str, Any] = exp.to_fields()
    for arm, counts in (("champion", champion), ("challenger", challenger)):
        fields |= {f"{arm}.{k}": v for k, v in zip(ARM_FIELDS, counts, strict=True)}
    if exp.mode == "shadow":  # champion right and challenger wrong (b), and the reverse (c)
        fields |= {
            "b": max(0, champion[1] - challenger[1]),
            "c": max(0, challenger[1] - champion[1]),
        }
    r.hset(Keys(PREFIX).experiment(exp.id), mapping=fields)


BETTER = ((600, 480, 100, 90), (600, 560, 100, 92))
WORSE = ((600, 480, 100, 90), (600, 380, 100, 90))
EQUAL = ((600, 480, 100, 90), (600, 481, 100, 90))


def evaluator(
    r: fakeredis.FakeRedis, store: StrategyStore, auto: bool, seen: list[Any]
) -> Evaluator:
    policy = Policy(alpha=0.05, min_labels=50, auto_apply=auto, canary_weight=0.1)
    return Evaluator(
        r,
        PREFIX,
        store,
        policy,
        seen.append,
        lambda e, a, applied: seen.append((e.task, a, applied)),
    )


def test_experiment_identity_and_start_version(strategies: StrategyStore) -> None:
    exp = start(strategies, "canary", weight=0.1)
    assert exp.id == "canary|team|m@1|m@2|canary:m@2" and exp.start_version == 2
    raised = start(strategies, "canary", weight=0.3)  # a new weight is the same experiment
    assert (raised.id, raised.start_version) == (exp.id, 2)
    other = start(strategies, "canary", model="m@3", weight=0.3)
    assert other.id != exp.id and other.start_version == 4
    assert Experiment.from_fields(other.to_fields()) == other
    assert Experiment.of("team", TaskPlan("champion", "m@1")) is None


def test_recommend_only_records_once_and_never_writes(
    r: fakeredis.FakeRedis, strategies: StrategyStore
) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, *BETTER)
    seen: list[Any] = []
    ev = evaluator(r, strategies, False, seen)
    first = ev.evaluate([exp.id], running(strategies.current(), strategies.history()))
    second = ev.evaluate([exp.id], running(strategies.current(), strategies.history()))
    assert first[0].decision.action == "promote" and first[0].recorded is not None
    assert first[0].recorded == second[0].recorded and not first[0].recorded["applied"]
    assert [x for x in seen if isinstance(x, tuple)] == [("team", "promote", False)], (
        "one recommendation"
    )
    current = strategies.current()
    assert current is not None and current.version == 2 and current.tasks["team"].mode == "canary"
    doc = status(JoinStore(r, PREFIX, 3600), ev, ev.policy)
    assert (
        doc["experiments"][0]["decision"]["action"] == "promote"
        and doc["experiments"][0]["running"]
    )
    json.dumps(doc)  # JSON-ready


@pytest.mark.parametrize(
    ("mode", "counts", "expect"),
    [
        ("canary", BETTER, TaskPlan("champion", "m@2")),
        ("canary", WORSE, TaskPlan("champion", "m@1")),
        ("shadow", BETTER, TaskPlan("canary", "m@1", "m@2", weight=0.1, salt="canary:m@2")),
        ("shadow", WORSE, TaskPlan("champion", "m@1")),
    ],
)
def test_auto_apply_writes_the_strategy_once_with_the_evidence(
    r: fakeredis.FakeRedis, strategies: StrategyStore, mode: str, counts: Any, expect: TaskPlan
) -> None:
    exp = start(strategies, mode)
    put_counts(r, exp, *counts)
    seen: list[Any] = []
    ev = evaluator(r, strategies, True, seen)
    exps = running(strategies.current(), strategies.history())
    verdict: Verdict = ev.evaluate([exp.id], exps)[0]
    assert (
        verdict.recorded is not None
        and verdict.recorded["applied"]
        and verdict.recorded["strategy_version"] == 3
    )
    current = strategies.current()
    assert current is not None and current.version == 3 and current.tasks["team"] == expect
    assert current.tasks["issue"] == TaskPlan("champion", "m@1"), "other tasks are left alone"
    assert (
        "always-valid p_" in current.reason and f"labels champion={counts[0][0]}" in current.reason
    )
    ev.evaluate([exp.id], exps)  # the stale view still lists the experiment: no second write
    assert strategies.current().version == 3  # type: ignore[union-attr]
    assert [x for x in seen if isinstance(x, tuple)] == [("team", verdict.decision.action, True)]


def test_equal_arms_wait(r: fakeredis.FakeRedis, strategies: StrategyStore) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, *EQUAL)
    verdict = evaluator(r, strategies, True, []).evaluate([exp.id], running(strategies.current()))[
        0
    ]
    assert verdict.decision.action == "wait" and verdict.recorded is None
    assert strategies.current().version == 2  # type: ignore[union-attr]


def test_a_plan_changed_by_someone_else_is_not_overwritten(
    r: fakeredis.FakeRedis, strategies: StrategyStore
) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, *BETTER)
    exps = running(strategies.current(), strategies.history())
    strategies.update(lambda cur: transitions.end(cur, "team"), "operator ended it", "ops")
    verdict = evaluator(r, strategies, True, []).evaluate([exp.id], exps)[0]
    assert verdict.recorded is not None and verdict.recorded.get("superseded")
    current = strategies.current()
    assert current is not None and current.version == 3 and current.reason == "operator ended it"


def test_a_recommendation_is_applied_once_auto_apply_is_turned_on(
    r: fakeredis.FakeRedis, strategies: StrategyStore
) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, *WORSE)
    exps = running(strategies.current(), strategies.history())
    evaluator(r, strategies, False, []).evaluate([exp.id], exps)
    assert strategies.current().version == 2  # type: ignore[union-attr]
    verdict = evaluator(r, strategies, True, []).evaluate([exp.id], exps)[0]
    assert (
        verdict.recorded is not None
        and verdict.recorded["action"] == "rollback"
        and verdict.recorded["applied"]
    )
    assert strategies.current().tasks["team"] == TaskPlan("champion", "m@1")  # type: ignore[union-attr]


def test_experiments_that_no_longer_run_are_not_evaluated(
    r: fakeredis.FakeRedis, strategies: StrategyStore
) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, *BETTER)
    assert evaluator(r, strategies, True, []).evaluate([exp.id], running(strategy(9))) == []
    assert running(strategy(9, team=shadow()))["team"].mode == "shadow"
    assert running(strategy(9, team=canary("m@3")))["team"].challenger == "m@3"


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_first_decision_is_decide_after_every_label(mode: str) -> None:
    exp = Experiment(mode, "team", "m@1", "m@2", "s")  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    labels, champion, challenger, pair = [], ArmStats(), ArmStats(), Discordance()
    expected = None
    for _ in range(3000):
        vulnerable = bool(rng.random() < 0.2)
        right = rng.random(2) < (0.75, 0.9)
        flags = rng.random(2) < (0.85, 0.95)
        before = [a.to_dict() for a in (champion, challenger)] + [pair.to_dict()]
        arms = [0, 1] if mode == "shadow" else [int(rng.random() < 0.5)]
        for i in arms:
            (champion, challenger)[i].record(
                bool(right[i]), vulnerable=vulnerable, flagged=bool(flags[i])
            )
        if mode == "shadow":
            pair.record(bool(right[0]), bool(right[1]))
        after = [a.to_dict() for a in (champion, challenger)] + [pair.to_dict()]
        inc = {
            f"{prefix}{k}": after[j][k] - before[j][k]
            for j, prefix in enumerate(("champion.", "challenger.", ""))
            for k in after[j]
        }
        labels.append(inc)
        d = decide(
            champion,
            challenger,
            paired=mode == "shadow",
            discordant=pair if mode == "shadow" else None,
        )
        if expected is None and d.action != "wait":
            expected = d
    got = first_decision(exp, {}, labels, Policy())
    assert expected is not None and got is not None
    assert (got.action, got.evidence) == (expected.action, expected.evidence)
    # the same labels in two batches: the second starts from the counters the first left in Redis
    k = (expected.evidence["n_champion"] + expected.evidence["n_challenger"]) // (
        4 if mode == "shadow" else 2
    )
    base = {name: str(sum(x[name] for x in labels[:k])) for name in labels[0]}
    assert first_decision(exp, {}, labels[:k], Policy()) is None
    again = first_decision(exp, base, labels[k:], Policy())
    assert again is not None and again.evidence == expected.evidence


def test_a_batch_records_the_decision_of_the_label_that_decided(
    r: fakeredis.FakeRedis, strategies: StrategyStore
) -> None:
    exp = start(strategies, "canary")
    put_counts(r, exp, (400, 320, 80, 72), (400, 375, 80, 76))  # decided already: p_better is tiny
    r.hdel(Keys(PREFIX).experiment(exp.id), "decision")
    seen: list[Any] = []
    ev = evaluator(r, strategies, False, seen)
    fields = {k.decode(): v.decode() for k, v in r.hgetall(Keys(PREFIX).experiment(exp.id)).items()}
    worse_labels = [{"champion.n": 1, "champion.correct": 1}] * 5
    doc = ev.decider(exp, fields, worse_labels)
    assert doc is not None and doc["action"] == "promote" and doc["evidence"]["n_champion"] == 401
