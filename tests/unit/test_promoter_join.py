"""The promoter's join on fakeredis: any arrival order, parked and unknown feedback, duplicates,
replays, malformed and late records, and which labels count in which experiment."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from pydantic import BaseModel

from consumer.strategy import Strategy, parse
from promoter.experiments import Counts, running
from promoter.records import Decoded, Kind, decode
from promoter.state import JoinStore
from promoter.synthetic import Simulator, Skill, Truth, encode, feedback

TTL = 86_400
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = T0.timestamp() + 7200
HEADS = {m: {"team": {}, "issue": {}, "vulnerable": {}} for m in ("m@1", "m@2", "m@3")}
LABELS = {
    "team": ["banking", "cards", "loans"],
    "issue": ["fees", "fraud", "other"],
    "vulnerable": ["no", "yes"],
}
TOPICS: dict[Kind, str] = {
    "allocation": "allocations",
    "shadow": "allocations.shadow",
    "feedback": "feedback",
}


def strategy(version: int = 1, **plans: Mapping[str, Any]) -> Strategy:
    tasks = {t: {"mode": "champion", "champion": "m@1"} for t in ("team", "issue", "vulnerable")}
    doc = {
        "schema": "strategy/v1",
        "version": version,
        "updated_at": "2026-01-01T00:00:00Z",
        "updated_by": "test",
        "reason": "test",
        "tasks": tasks | plans,
    }
    return parse(doc, HEADS.get)


def canary(challenger: str = "m@2", weight: float = 0.5) -> dict[str, Any]:
    return {
        "mode": "canary",
        "champion": "m@1",
        "challenger": challenger,
        "weight": weight,
        "salt": f"c:{challenger}",
    }


def shadow(challenger: str = "m@2") -> dict[str, Any]:
    return {
        "mode": "shadow",
        "champion": "m@1",
        "challenger": challenger,
        "sample": 1.0,
        "salt": f"s:{challenger}",
    }


def truth(i: int, vulnerable: bool = False) -> Truth:
    labels = {"team": "banking", "issue": "fees", "vulnerable": "yes" if vulnerable else "no"}
    return Truth(f"c-{i}", labels, ("complaints", 0, i))


class Feed:
    """Decoded records with increasing offsets per topic, as the loop would pass them."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def rec(self, kind: Kind, message: BaseModel | bytes | None) -> Decoded:
        topic = TOPICS[kind]
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        value = encode(message) if isinstance(message, BaseModel) else message
        return decode(kind, topic, 0, offset, value)


@pytest.fixture
def r() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def store(r: fakeredis.FakeRedis) -> JoinStore:
    return JoinStore(r, "t:", TTL)


def records(
    sim: Simulator, t: Truth, feed: Feed, delay_h: float = 1.0
) -> tuple[Decoded, Decoded | None, Decoded]:
    alloc, sh = sim.allocate(t, T0)
    fb = feedback(t, T0 + timedelta(hours=delay_h))
    return (
        feed.rec("allocation", alloc),
        feed.rec("shadow", sh) if sh else None,
        feed.rec("feedback", fb),
    )


def perfect(s: Strategy, seed: int = 0) -> Simulator:
    return Simulator(
        s, {m: Skill(1.0, recall=1.0, false_alarm=0.0) for m in HEADS}, LABELS, seed=seed
    )


def test_feedback_before_its_allocation_is_parked_then_joined(
    store: JoinStore, r: fakeredis.FakeRedis
) -> None:
    s, feed = strategy(), Feed()
    alloc, _, fb = records(perfect(s), truth(1), feed)
    store.apply([fb], {}, NOW)
    assert store.summary() == {"feedback.parked": 1, "feedback.parked_now": 1}
    delta = store.apply([alloc], {}, NOW)
    assert store.summary()["feedback.joined"] == 1 and store.summary()["feedback.parked_now"] == 0
    assert delta.delays == [3600.0]
    live = store.live()
    assert (
        live["acc\tteam\tm@1\tchampion\tn"] == 1 and live["acc\tteam\tm@1\tchampion\tcorrect"] == 1
    )
    assert r.ttl("t:promoter:c:c-1") <= TTL


def test_duplicates_count_once_and_replays_count_nothing(store: JoinStore) -> None:
    s, feed = strategy(), Feed()
    alloc, _, fb = records(perfect(s), truth(1), feed)
    store.apply([alloc, fb], {}, NOW)
    again = feed.rec(
        "feedback", feedback(truth(1), T0 + timedelta(hours=2))
    )  # a second decision: new offset
    store.apply([again, feed.rec("allocation", perfect(s).allocate(truth(1), T0)[0])], {}, NOW)
    replay = store.apply(
        [alloc, fb, again], {}, NOW
    )  # a crash before the offset commit: the same records
    assert replay.summary == {"allocation.replayed": 1, "feedback.replayed": 2}
    summary = store.summary()
    assert summary["feedback.joined"] == 1 and summary["feedback.duplicate"] == 1
    assert summary["allocation.stored"] == 1 and summary["allocation.duplicate"] == 1
    assert store.live()["acc\tissue\tm@1\tchampion\tn"] == 1


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("feedback", b"\xff\xfe not utf-8"),
        ("feedback", b'{"schema": "feedback/v1", '),
        ("feedback", json.dumps({"schema": "feedback/v9", "complaint_id": "secret-id"}).encode()),
        (
            "allocation",
            json.dumps({"schema": "allocation/v1", "complaint_id": "secret-id"}).encode(),
        ),
        ("shadow", b"[1, 2]"),
        ("shadow", None),
    ],
)
def test_malformed_records_are_counted_and_logged_without_content(
    store: JoinStore, kind: Kind, value: bytes | None
) -> None:
    feed = Feed()
    rec = feed.rec(kind, value)
    assert rec.error and not rec.complaint_id
    store.apply([rec, feed.rec(kind, value)], {}, NOW)
    assert store.summary()[f"{kind}.malformed"] == 2
    logged = store.malformed()
    assert logged[0]["kind"] == kind and logged[0]["offset"] == 1 and logged[1]["offset"] == 0
    assert "secret-id" not in json.dumps(logged), "no input values in the malformed log"


def test_unknown_is_counted_once_after_the_ttl(store: JoinStore) -> None:
    feed = Feed()
    store.apply([feed.rec("feedback", feedback(truth(1), T0))], {}, NOW)
    assert store.sweep(NOW + TTL - 1) == 0
    assert store.sweep(NOW + TTL + 1) == 1
    assert store.sweep(NOW + TTL + 2) == 0
    assert store.summary()["feedback.unknown"] == 1 and store.summary()["feedback.parked_now"] == 0


def test_feedback_naming_another_decision_waits_for_it(store: JoinStore) -> None:
    s, feed = strategy(), Feed()
    first, _ = perfect(s).allocate(truth(1), T0)
    t2 = Truth("c-1", truth(1).labels, ("complaints", 0, 99))  # re-allocation of the same complaint
    second, _ = perfect(s).allocate(t2, T0)
    fb = feedback(truth(1), T0 + timedelta(hours=1), decision_id=second.decision_id)
    store.apply([feed.rec("allocation", first), feed.rec("feedback", fb)], {}, NOW)
    assert "feedback.joined" not in store.summary()
    store.apply([feed.rec("allocation", second)], {}, NOW)
    assert store.summary()["feedback.joined"] == 1 and store.summary()["allocation.replaced"] == 1


def test_late_feedback_counts_live_but_not_in_the_experiment(store: JoinStore) -> None:
    s = strategy(2, team=canary())
    exps = running(s)
    sim, feed = perfect(s), Feed()
    batch = [x for i in range(40) for x in records(sim, truth(i), feed, delay_h=2) if x]
    store.apply(batch, exps, NOW)
    in_time = store.summary()["feedback.joined"]
    late = [
        x for i in range(40, 50) for x in records(sim, truth(i), feed, delay_h=TTL / 3600 + 1) if x
    ]
    store.apply(late, exps, NOW)
    assert store.summary()["feedback.late"] == 10 and in_time == 40
    counts = Counts.of(
        "canary",
        {
            k.decode(): v.decode()
            for k, v in store.r.hgetall(store.keys.experiment(exps["team"].id)).items()
        },
    )
    assert counts.champion.n + counts.challenger.n == 40
    assert (
        sum(v for k, v in store.live().items() if k.startswith("acc\tteam") and k.endswith("\tn"))
        == 50
    )


def test_a_canary_allocation_whose_experiment_ended_is_late(store: JoinStore) -> None:
    s = strategy(2, team=canary(weight=1.0))
    feed = Feed()
    alloc, _, fb = records(perfect(s), truth(1), feed)
    store.apply([alloc, fb], running(strategy(3)), NOW)  # the canary ended before the label came
    assert store.summary()["feedback.late"] == 1


def exp_counts(store: JoinStore, exp_id: str, mode: str = "canary") -> Counts:
    raw = store.r.hgetall(store.keys.experiment(exp_id))
    return Counts.of(mode, {k.decode(): v.decode() for k, v in raw.items()})  # type: ignore[arg-type]


def test_canary_labels_count_in_the_arm_that_served_them(store: JoinStore) -> None:
    s = strategy(2, team=canary(), issue=canary(), vulnerable=canary())
    exps = running(s)
    sim = Simulator(s, {"m@1": Skill(0.0, 1.0, 0.0), "m@2": Skill(1.0, 1.0, 0.0)}, LABELS)
    feed = Feed()
    batch = [
        x for i in range(200) for x in records(sim, truth(i, vulnerable=i % 4 == 0), feed) if x
    ]
    store.apply(batch, exps, NOW)
    team = exp_counts(store, exps["team"].id)
    n_canary = sum(s.tasks["team"].arm(f"c-{i}") == "canary" for i in range(200))
    assert (team.challenger.n, team.challenger.correct) == (n_canary, n_canary)
    assert (team.champion.n, team.champion.correct) == (200 - n_canary, 0)
    assert team.challenger.vulnerable_positives + team.champion.vulnerable_positives == 50
    assert team.discordance is None


@pytest.mark.parametrize(
    "order", ["alloc-shadow-feedback", "feedback-shadow-alloc", "shadow-feedback-alloc"]
)
def test_shadow_pairs_count_once_in_any_arrival_order(store: JoinStore, order: str) -> None:
    s = strategy(2, team=shadow())
    exps = running(s)
    sim = Simulator(s, {"m@1": Skill(0.0, 1.0, 0.0), "m@2": Skill(1.0, 1.0, 0.0)}, LABELS)
    feed = Feed()
    rank = {k: order.split("-").index(k) for k in ("alloc", "shadow", "feedback")}
    for i in range(30):
        alloc, sh, fb = records(sim, truth(i), feed)
        assert sh is not None
        for rec in sorted(
            [alloc, sh, fb], key=lambda d: rank[{"allocation": "alloc"}.get(d.kind, d.kind)]
        ):
            store.apply([rec], exps, NOW)  # one record per batch: the worst interleaving
    team = exp_counts(store, exps["team"].id, "shadow")
    assert team.champion.n == team.challenger.n == 30 and team.discordance is not None
    assert (
        team.champion.correct,
        team.challenger.correct,
        team.discordance.c,
        team.discordance.b,
    ) == (0, 30, 30, 0)
    assert store.summary()["shadow.joined"] == 30


def test_labels_from_before_the_experiment_started_do_not_count(store: JoinStore) -> None:
    old = strategy(1)
    sim, feed = perfect(old), Feed()
    allocs = [
        records(sim, truth(i), feed) for i in range(5)
    ]  # champion-mode allocations, strategy v1
    s = strategy(2, team=canary())
    store.apply([a for a, _, _ in allocs] + [f for _, _, f in allocs], running(s, [old]), NOW)
    assert store.summary()["feedback.joined"] == 5
    assert not store.r.exists(store.keys.experiment(running(s)["team"].id))


def test_a_conflicting_writer_makes_the_batch_retry_and_count_once(r: fakeredis.FakeRedis) -> None:
    class Racing(JoinStore):
        raced = False

        def _prepare(self, *args: Any, **kwargs: Any) -> Any:
            out = super()._prepare(*args, **kwargs)
            if (
                not self.raced
            ):  # another replica writes this complaint between our read and our EXEC
                self.raced = True
                self.r.hset(self.keys.complaint("c-1"), "x", "1")
            return out

    store, feed = Racing(r, "t:", TTL), Feed()
    alloc, _, fb = records(perfect(strategy()), truth(1), feed)
    store.apply([alloc, fb], {}, NOW)
    assert store.raced and store.summary()["feedback.joined"] == 1


def test_coverage_and_accuracy_of_the_automated_share_per_model(store: JoinStore) -> None:
    """The live figures the manifest's guarantee is checked against: of the labelled predictions,
    the share each model decided alone, and how many of those were right."""
    from promoter.join import live_table

    s, feed = strategy(), Feed()
    skills = {m: Skill(0.5, coverage=0.4) for m in HEADS}
    sim = Simulator(s, skills, LABELS, seed=3)
    batch = [rec for i in range(400) for rec in records(sim, truth(i), feed) if rec]
    store.apply(batch, {}, NOW)
    rows = {(r["task"], r["arm"]): r for r in live_table(store.live())["automated"]}
    team = rows[("team", "champion")]
    assert team["routed"] == 400 and team["model"] == "m@1"
    assert 0.3 < team["coverage"] < 0.5  # the hash draws about 40%
    assert team["automated"] == round(team["coverage"] * 400)
    assert 0.35 < team["accuracy"] < 0.65 and team["correct"] <= team["automated"]
    assert ("vulnerable", "champion") not in rows  # a binary head has no routing


def test_live_recall_counts_the_models_own_flag_not_the_other_signals(store: JoinStore) -> None:
    """A keyword or customer-record signal sets the allocation's ``vulnerable``; the model's recall,
    which its manifest guarantees, must not borrow it."""
    from promoter.join import live_table

    s, feed = strategy(), Feed()
    missing = Simulator(s, {m: Skill(1.0, recall=0.0) for m in HEADS}, LABELS)
    batch = []
    for i in range(5):
        alloc, _ = missing.allocate(truth(i, vulnerable=True), T0)
        assert alloc.predictions["vulnerable"].label == "no"
        signalled = alloc.model_copy(
            update={
                "vulnerable": True,
                "journey": "vulnerable",
                "vulnerable_signals": ("keyword_service",),
            }
        )
        batch += [
            feed.rec("allocation", signalled),
            feed.rec("feedback", feedback(truth(i, vulnerable=True), T0 + timedelta(hours=1))),
        ]
    store.apply(batch, {}, NOW)
    [row] = live_table(store.live())["vulnerable_recall"]
    assert (row["positives"], row["flagged"]) == (5, 0)
