"""``allocator promoter evaluate --replay-topic``: a replay scored against the joined feedback on
fakeredis and the in-memory Kafka double, next to what was published for the same complaints."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from consumer.kafka_memory import MemoryBroker, MemoryReader
from consumer.strategy import Strategy, parse
from promoter.offline import evaluate_replay, table
from promoter.records import decode
from promoter.state import JoinStore
from promoter.synthetic import Simulator, Skill, Truth, encode, feedback

PREFIX = "t:"
AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HEADS = {m: {"team": {}, "issue": {}, "vulnerable": {}} for m in ("m@1", "m@2")}
LABELS = {
    "team": ["banking", "cards", "loans"],
    "issue": ["fees", "other"],
    "vulnerable": ["no", "yes"],
}
N = 60


def champion(model: str) -> Strategy:
    doc = {
        "schema": "strategy/v1",
        "version": 1,
        "updated_at": "2026-01-01T00:00:00Z",
        "updated_by": "test",
        "reason": "test",
        "tasks": {t: {"mode": "champion", "champion": model} for t in LABELS},
    }
    return parse(doc, HEADS.get)


def truths() -> list[Truth]:
    out = []
    for i in range(N):
        labels = {
            "team": LABELS["team"][i % 3],
            "issue": LABELS["issue"][i % 2],
            "vulnerable": "yes" if i % 4 == 0 else "no",
        }
        out.append(Truth(f"c{i}", labels, ("complaints", 0, i), f"{i:064x}"))
    return out


def test_a_replay_is_scored_on_the_joined_feedback_next_to_the_published_model() -> None:
    client = fakeredis.FakeRedis()
    published = Simulator(champion("m@1"), {"m@1": Skill(0.5, recall=0.5)}, LABELS, seed=1)
    replayed = Simulator(champion("m@2"), {"m@2": Skill(0.9, recall=0.9)}, LABELS, seed=2)
    broker = MemoryBroker()
    batch, replay = [], {}
    for i, t in enumerate(truths()):
        alloc, _ = published.allocate(t, AT)
        batch.append(decode("allocation", "allocations", 0, i, encode(alloc)))
        if i < 50:  # ten complaints have no feedback yet
            fb = encode(feedback(t, AT + timedelta(hours=1)))
            batch.append(decode("feedback", "feedback", 0, i, fb))
        again, _ = replayed.allocate(t, AT + timedelta(days=1))
        replay[t.complaint_id] = again
        headers = [("replay.id", b"run-1")]
        for _ in range(2 if i == 3 else 1):  # complaint 3 was replayed twice (a rerun)
            broker.append("replay-m2", encode(again), key=t.complaint_id.encode(), headers=headers)
    broker.append("replay-m2", b"not an allocation", key=b"x", headers=[("replay.id", b"run-1")])
    JoinStore(client, PREFIX, 30 * 86_400).apply(batch, {}, AT.timestamp() + 7200)

    result = evaluate_replay(client, PREFIX, MemoryReader(broker), "replay-m2")  # type: ignore[arg-type]

    assert result.records == N + 2 and result.labelled == 50
    assert result.skipped == {"no_feedback": 10, "malformed": 1}
    assert result.replay_ids == {"run-1": N}
    labelled = truths()[:50]
    for task in LABELS:
        s = result.tasks[task]
        mine = [replay[t.complaint_id].predictions[task].label == t.labels[task] for t in labelled]
        assert s.n == 50 and s.replay_correct == sum(mine)
        assert s.only_replay - s.only_published == s.replay_correct - s.published_correct
        assert result.models[f"replay {task}"] == {"m@2": 50}
        assert result.models[f"published {task}"] == {"m@1": 50}
    assert result.tasks["team"].replay_correct > result.tasks["team"].published_correct
    assert result.vulnerable_positives == sum(t.labels["vulnerable"] == "yes" for t in labelled)
    doc = result.to_dict()
    json.dumps(doc)
    assert doc["tasks"]["team"]["replay_accuracy"] == pytest.approx(
        result.tasks["team"].replay_correct / 50
    )
    text = table(result)
    assert "labelled by joined feedback: 50" in text and "only published" in text

    other = evaluate_replay(client, PREFIX, MemoryReader(broker), "replay-m2", "run-2")  # type: ignore[arg-type]
    assert other.labelled == 0 and other.skipped["other_replay"] == N + 2


def test_feedback_on_another_text_of_the_complaint_does_not_label_the_replay() -> None:
    client = fakeredis.FakeRedis()
    sim = Simulator(champion("m@1"), {"m@1": Skill(0.8)}, LABELS)
    t = truths()[0]
    alloc, _ = sim.allocate(t, AT)
    fb = encode(feedback(t, AT + timedelta(hours=1)))
    JoinStore(client, PREFIX, 86_400).apply(
        [decode("allocation", "a", 0, 0, encode(alloc)), decode("feedback", "f", 0, 0, fb)],
        {},
        AT.timestamp() + 7200,
    )
    broker = MemoryBroker()
    moved = Truth(t.complaint_id, t.labels, ("complaints", 0, 99), "e" * 64)  # sent again, edited
    broker.append("r", encode(sim.allocate(moved, AT)[0]), key=b"c0")
    result = evaluate_replay(client, PREFIX, MemoryReader(broker), "r")  # type: ignore[arg-type]
    assert result.labelled == 0 and result.skipped == {"other_input": 1}
