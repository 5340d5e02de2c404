"""``allocator promoter evaluate --replay-topic TOPIC``: the offline accuracy of a replay
(``allocator replay``) on the feedback the promoter has joined, per task, next to what was published
for the same complaints.

The replay topic is read whole, as it is when the command starts (``consumer.ranges``). A replayed
decision is labelled when its complaint's state in Redis has joined feedback (``j``) on an
allocation of the same input: the same ``decision_id`` (the same source record) or the same
``input_sha256`` (the same text, sent again). Both sides are scored on exactly those decisions
against the people's labels: per task ``n``, accuracy, the discordant pairs (``only_replay``: only
the replay right; ``only_published``: only the published right; what a McNemar test takes), and the
recall of vulnerable customers. Skipped, by reason: ``malformed`` (not allocation/v1),
``no_feedback`` (none joined yet, or its state expired after ``join_ttl_s``), ``other_input``
(feedback on another text of that complaint), ``other_replay`` (``--replay-id`` names another run).
A decision replayed twice (a rerun) counts once. No complaint text is read or printed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from kafka import KafkaConsumer

from consumer.errors import ConfigError
from consumer.kafka import Record
from consumer.ranges import Selection, read, spans_of
from consumer.settings import PromoterSettings
from consumer.store import map_redis_errors
from promoter.records import AllocRec, FeedbackRec, decode
from promoter.state import Keys


@dataclass
class TaskScore:
    n: int = 0
    replay_correct: int = 0
    published_correct: int = 0
    only_replay: int = 0
    only_published: int = 0

    def add(self, replay: bool, published: bool) -> None:
        self.n += 1
        self.replay_correct += replay
        self.published_correct += published
        self.only_replay += replay and not published
        self.only_published += published and not replay

    def to_dict(self) -> dict[str, Any]:
        def acc(k: int) -> float | None:
            return k / self.n if self.n else None

        return dataclasses.asdict(self) | {
            "replay_accuracy": acc(self.replay_correct),
            "published_accuracy": acc(self.published_correct),
        }


@dataclass
class Evaluation:
    topic: str
    records: int = 0
    labelled: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    replay_ids: Counter[str] = field(default_factory=Counter)
    tasks: dict[str, TaskScore] = field(default_factory=dict)
    models: dict[str, Counter[str]] = field(default_factory=dict)  # "replay <task>" -> ref -> n
    vulnerable_positives: int = 0
    vulnerable_flagged: Counter[str] = field(default_factory=Counter)  # side -> flagged positives

    def recall(self, side: str) -> float | None:
        n = self.vulnerable_positives
        return self.vulnerable_flagged[side] / n if n else None

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs
        return {
            "topic": self.topic,
            "records": self.records,
            "labelled": self.labelled,
            "skipped": dict(self.skipped),
            "replay_ids": dict(self.replay_ids),
            "tasks": {t: s.to_dict() for t, s in sorted(self.tasks.items())},
            "models": {k: dict(c) for k, c in sorted(self.models.items())},
            "vulnerable_positives": self.vulnerable_positives,
            "vulnerable_recall": {s: self.recall(s) for s in ("replay", "published")},
        }


class Evaluator:
    """Scores batches of replay records against the joined feedback in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, topic: str, replay_id: str | None) -> None:
        self.r: Any = client  # synchronous, whatever redis-py's result types say
        self.keys = Keys(prefix)
        self.replay_id = replay_id
        self.seen: set[str] = set()
        self.result = Evaluation(topic)

    def batch(self, records: Sequence[Record]) -> None:
        todo: list[tuple[str, AllocRec]] = []
        for rec in records:
            self.result.records += 1
            rid = dict(rec.headers or ()).get("replay.id", b"").decode() or "(none)"
            if self.replay_id is not None and rid != self.replay_id:
                self.result.skipped["other_replay"] += 1
                continue
            got = decode("allocation", rec.topic, rec.partition, rec.offset, rec.value)
            if not isinstance(got.body, AllocRec):
                self.result.skipped["malformed"] += 1
                continue
            if got.body.decision_id in self.seen:
                continue  # the same decision replayed again
            self.seen.add(got.body.decision_id)
            self.result.replay_ids[rid] += 1
            todo.append((got.complaint_id, got.body))
        with map_redis_errors("evaluate read"):
            pipe = self.r.pipeline(transaction=False)
            for cid, _ in todo:
                pipe.hmget(self.keys.complaint(cid), ["a", "f", "j"])
            states = pipe.execute() if todo else []
        for (_, replay), (a, f, j) in zip(todo, states, strict=True):
            self._score(replay, a, f, j)

    def _score(self, replay: AllocRec, a: bytes | None, f: bytes | None, j: bytes | None) -> None:
        if a is None or f is None or not j:
            self.result.skipped["no_feedback"] += 1
            return
        published, fb = AllocRec.from_json(a), FeedbackRec.from_json(f)
        same = (published.decision_id, published.input_sha256)
        if replay.decision_id != same[0] and replay.input_sha256 != same[1]:
            self.result.skipped["other_input"] += 1
            return
        self.result.labelled += 1
        for task, pred in sorted(replay.predictions.items()):
            truth, theirs = fb.labels.get(task), published.predictions.get(task)
            if truth is None or theirs is None:
                continue
            self.result.tasks.setdefault(task, TaskScore()).add(
                pred.label == truth, theirs.label == truth
            )
            for side, ref in (("replay", pred.model), ("published", theirs.model)):
                self.result.models.setdefault(f"{side} {task}", Counter())[ref] += 1
        if fb.vulnerable:
            self.result.vulnerable_positives += 1
            self.result.vulnerable_flagged["replay"] += replay.vulnerable
            self.result.vulnerable_flagged["published"] += published.vulnerable


def evaluate_replay(
    client: redis.Redis,
    prefix: str,
    reader: KafkaConsumer,
    topic: str,
    replay_id: str | None = None,
    max_records: int = 500,
) -> Evaluation:
    """Read ``topic`` as it is now and score it against the joined feedback under ``prefix``."""
    evaluator = Evaluator(client, prefix, topic, replay_id)
    for batch in read(reader, topic, spans_of(reader, Selection(topic)), max_records):
        evaluator.batch(batch)
    return evaluator.result


def table(e: Evaluation) -> str:
    """The evaluation for people: counts and shares only."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    skipped = ", ".join(f"{k}={v}" for k, v in sorted(e.skipped.items())) or "none"
    runs = ", ".join(f"{k} ({v})" for k, v in sorted(e.replay_ids.items())) or "none"
    lines = [
        f"replay topic {e.topic}: {e.records} records, runs {runs}",
        f"labelled by joined feedback: {e.labelled}; skipped: {skipped}",
        "",
        f"{'task':<14}{'n':>7}{'replay':>9}{'published':>11}{'only replay':>13}"
        f"{'only published':>16}",
    ]
    for task, s in sorted(e.tasks.items()):
        d = s.to_dict()
        lines.append(
            f"{task:<14}{s.n:>7}{pct(d['replay_accuracy']):>9}{pct(d['published_accuracy']):>11}"
            f"{s.only_replay:>13}{s.only_published:>16}"
        )
    lines.append(
        f"vulnerable recall on {e.vulnerable_positives} positives: replay "
        f"{pct(e.recall('replay'))}, published {pct(e.recall('published'))}"
    )
    for what, refs in sorted(e.models.items()):
        lines.append(f"  {what}: " + ", ".join(f"{m} {n}" for m, n in refs.most_common()))
    return "\n".join(lines)


def print_evaluation(e: Evaluation, as_json: bool) -> None:
    print(json.dumps(e.to_dict(), indent=2, sort_keys=True) if as_json else table(e))


def evaluate_cli(
    settings: PromoterSettings, topic: str, replay_id: str | None, as_json: bool
) -> int:
    """``allocator promoter evaluate``: connect, evaluate, print."""
    from consumer import kafka, store

    if topic in (settings.topic_allocations, settings.topic_complaints, settings.topic_feedback):
        raise ConfigError(f"{topic} is not a replay topic (allocator replay --to TOPIC writes one)")
    client = store.connect(settings)
    try:
        reader = kafka.reader(settings, allow_auto_create_topics=False)
        try:
            result = evaluate_replay(client, settings.redis_prefix, reader, topic, replay_id)
        finally:
            reader.close()
    finally:
        client.close()
    print_evaluation(result, as_json)
    return 0
