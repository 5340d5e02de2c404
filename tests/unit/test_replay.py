"""``allocator replay`` on the in-memory Kafka double and fakeredis: what it sends (allocation/v1
with replay headers, the same decision ids), the agreement it reports, the ranges it reads, and
what it refuses (one line, exit 2, nothing sent)."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from kafka import TopicPartition
from kafka import errors as kerrors

import allocator
from consumer import cli_replay
from consumer import strategy as transitions
from consumer.cli_args import parse_duration, parse_time
from consumer.cli_replay import Clients
from consumer.contracts import schemas
from consumer.contracts.messages import Source, dump
from consumer.decode import decode_complaint
from consumer.errors import BrokerError, ConfigError, StrategyValidationError
from consumer.kafka_memory import MemoryBroker, MemoryReader, MemorySender
from consumer.package import load_package
from consumer.plan import build_plan
from consumer.ranges import Selection, Span, read, resolve
from consumer.registry import Registry
from consumer.replay import check_target, model_strategy, protected_topics, published_only
from consumer.router import Item, Router
from consumer.settings import CommonSettings
from consumer.store import StrategyStore
from consumer.strategy import Strategy, TaskPlan

PREFIX = "t:"
TASKS = ("issue", "team", "vulnerable")
TEXTS = [
    "My credit report shows an account that is not mine and the bureau refuses to fix it.",
    "I am a veteran and the servicer charged me fees I did not expect on my student loan.",
    "The bank closed my checking account without telling me why.",
    "A debt collector calls me every day about a debt I never had.",
]
GOOD = 12
BAD = [
    b"not json at all",
    json.dumps({"schema": "complaint/v1", "complaint_id": "e", "text": " "}).encode(),
]
TOPICS = (
    "complaints",
    "allocations",
    "allocations.shadow",
    "complaints.dlq",
    "complaints.feedback",
)


class Rig:
    """Complaints on a 2-partition topic, their published allocations (the champion's, as the
    consumer makes them), two registered models and a champion strategy in fakeredis; the replay
    command's clients pointed at all of it."""

    def __init__(self, tiny: Path, tiny2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.broker = MemoryBroker()
        self.broker.create("complaints", 2)
        for topic in TOPICS[1:]:
            self.broker.create(topic)
        self.server = fakeredis.FakeServer()
        self.registry = Registry(self.redis(), PREFIX)
        self.a = self.registry.register(str(tiny)).ref
        self.b = self.registry.register(str(tiny2)).ref
        self.store = StrategyStore(self.redis(), PREFIX, self.registry)
        self.store.update(lambda cur: transitions.champion(cur, self.a, TASKS), "test", "me")
        for i in range(GOOD):
            doc = {"schema": "complaint/v1", "complaint_id": f"c{i}", "text": TEXTS[i % 4]}
            self.broker.append("complaints", json.dumps(doc).encode(), key=f"c{i}".encode())
        for i, value in enumerate(BAD):
            self.broker.append("complaints", value, key=f"bad-{i}".encode())
        self.published = self.publish(tiny)
        self.sender = MemorySender(self.broker)
        self.reads = 0
        for name, value in {
            "ALLOCATOR_REDIS_PREFIX": PREFIX,
            "ALLOCATOR_ORT_THREADS": "1",
            "ALLOCATOR_BATCH_MAX_MESSAGES": "5",
            **{f"ALLOCATOR_TOPIC_{n.upper()}": t for n, t in zip(_NAMES, TOPICS, strict=True)},
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(
            cli_replay,
            "CLIENTS",
            Clients(
                redis=lambda s: self.redis(),
                reader=self.reader,
                producer=lambda s: self.sender,
                ensure_topic=lambda s, topic: self.broker.create(topic),
            ),
        )

    def redis(self) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=self.server)

    def reader(self, settings: object) -> MemoryReader:
        self.reads += 1
        return MemoryReader(self.broker)

    def publish(self, package: Path) -> dict[str, dict[str, Any]]:
        """What the consumer published for the good complaints, by source coordinates."""
        pkg = load_package(package)
        plan = build_plan(model_strategy(pkg.ref, pkg.heads), {pkg.ref: pkg}, None, 1, 1)
        items = []
        for rec in self.broker.records("complaints"):
            try:
                complaint = decode_complaint(rec.value, 262_144, 100_000)
            except Exception:
                continue
            source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset)
            items.append(Item(complaint, source, 0.0))
        out = {}
        for _, alloc in Router(plan).route(items).allocations:
            self.broker.append("allocations", dump(alloc), key=alloc.complaint_id.encode())
            out[f"{alloc.source.partition}/{alloc.source.offset}"] = json.loads(dump(alloc))
        return out

    def sent(self, topic: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return [
            (json.loads(r.value or b""), {k: v.decode() for k, v in r.headers})
            for r in self.broker.records(topic)
        ]


_NAMES = ("complaints", "allocations", "shadow", "dlq", "feedback")


@pytest.fixture
def rig(tiny: Path, tiny2: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    return Rig(tiny, tiny2, monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = allocator.main(["replay", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_replay_sends_allocation_v1_with_replay_headers_and_the_published_decision_ids(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "--model", rig.b, "--to", "replay-b", "--json")
    assert status == 0, err
    report = json.loads(out)
    sent = rig.sent("replay-b")
    assert len(sent) == GOOD and report["replayed"] == GOOD and report["read"] == GOOD + len(BAD)
    assert report["undecodable"] == {"not_json": 1, "empty_text": 1}
    for doc, headers in sent:
        assert schemas.errors("allocation/v1", doc) == []
        assert schemas.errors("replay-headers/v1", headers) == []
        where = f"{headers['replay.source.partition']}/{headers['replay.source.offset']}"
        published = rig.published[where]
        # the same input record: the same decision id, the same complaint, another model
        assert doc["decision_id"] == published["decision_id"]
        assert doc["complaint_id"] == published["complaint_id"]
        assert doc["input_sha256"] == published["input_sha256"]
        assert {
            p["model"]["name"] + "@" + p["model"]["version"] for p in doc["predictions"].values()
        } == {rig.b}
        assert headers["replay.of"] == f"model:{rig.b}" and doc["strategy"]["version"] == 0
        assert headers["replay.id"] == report["replay_id"]
        assert headers["replay.selection"] == report["selection"]
    for task in TASKS:
        agreed = sum(
            doc["predictions"][task]["label"]
            == rig.published[f"{doc['source']['partition']}/{doc['source']['offset']}"][
                "predictions"
            ][task]["label"]
            for doc, _ in sent
        )
        row = report["tasks"][task]
        assert (row["replayed"], row["published"], row["agreed"]) == (GOOD, GOOD, agreed)
        assert row["agreement"] == pytest.approx(agreed / GOOD)
        assert report["published_models"][task] == {rig.a: GOOD}
    assert report["published_found"] == GOOD
    assert not any(text[:30] in out for text in TEXTS), "a report never prints complaint text"


def test_replaying_the_published_model_agrees_on_every_decision(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "--model", rig.a, "--to", "replay-a")
    assert status == 0, err
    for task in TASKS:
        assert f"{task:<16}{GOOD:>10}{GOOD:>11}{GOOD:>9}{'100.0%':>11}" in out
    assert f"published allocations found for {GOOD} of {GOOD}" in out
    assert "undecodable 2 (empty_text=1, not_json=1" in out
    assert not any(text[:30] in out for text in TEXTS)


def test_a_rerun_sends_the_same_decisions_under_the_same_replay_id(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        assert run(capsys, "--model", rig.b, "--to", "replay-b")[0] == 0
    sent = rig.sent("replay-b")
    first, second = sent[:GOOD], sent[GOOD:]
    assert [(d["decision_id"], h["replay.id"]) for d, h in first] == [
        (d["decision_id"], h["replay.id"]) for d, h in second
    ]
    assert [d["predictions"] for d, _ in first] == [d["predictions"] for d, _ in second]


def test_jsonl_output_holds_the_same_documents_and_no_temporary_file(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "replay.jsonl"
    status, _, err = run(capsys, "--model", rig.b, "--to", "replay-b", "--jsonl", str(out))
    assert status == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["decision_id"] for d in lines] == [d["decision_id"] for d, _ in rig.sent("replay-b")]
    assert list(tmp_path.iterdir()) == [out]
    only_file = tmp_path / "only.jsonl"
    assert run(capsys, "--model", rig.b, "--jsonl", str(only_file))[0] == 0  # no topic at all
    assert len(only_file.read_text().splitlines()) == GOOD


def test_the_strategy_in_force_and_a_strategy_file_replay_their_published_arms(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(capsys, "--current-strategy", "--to", "replay-s", "--json")
    assert status == 0, err
    assert json.loads(out)["of"] == "strategy:redis:v1"
    assert all(t["agreement"] == 1.0 for t in json.loads(out)["tasks"].values())

    canary = transitions.canary(rig.store.current(), rig.b, 0.5)
    doc = transitions.next_doc(rig.store.current(), canary, "what if", "me")
    path = tmp_path / "canary.json"
    path.write_text(json.dumps(doc))
    status, out, err = run(capsys, "--strategy", str(path), "--to", "replay-c", "--json")
    assert status == 0, err
    assert json.loads(out)["of"] == "strategy:file:v2"
    arms = {p["arm"] for d, _ in rig.sent("replay-c") for p in d["predictions"].values()}
    assert arms == {"champion", "canary"}, "a canary strategy replays both its published arms"


def test_a_shadow_arm_is_not_scored_it_publishes_nothing(tiny: Path, tiny2: Path) -> None:
    a, b = load_package(tiny).ref, load_package(tiny2).ref
    shadowed = Strategy(3, {t: TaskPlan("shadow", a, b, sample=1.0, salt="s") for t in TASKS})
    assert published_only(shadowed).models == {a}


def test_offsets_and_partitions_choose_the_records(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", rig.b, "--to", "replay-b", "--json", "--partition", "1"]
    status, out, err = run(capsys, *argv, "--start-offset", "1", "--end-offset", "4")
    assert status == 0, err
    report = json.loads(out)
    assert report["spans"] == [{"partition": 1, "start": 1, "end": 4, "gone": 0, "offsets": 3}]
    assert report["read"] == 3 and report["selection"] == "complaints/1:1-4"
    assert {h["replay.source.partition"] for _, h in rig.sent("replay-b")} == {"1"}
    assert sorted(int(h["replay.source.offset"]) for _, h in rig.sent("replay-b")) == sorted(
        o
        for o in (1, 2, 3)
        if rig.broker.logs[TopicPartition("complaints", 1)][o].value in _good(rig)
    )


def _good(rig: Rig) -> set[bytes | None]:
    return {r.value for r in rig.broker.records("complaints") if r.key and r.key.startswith(b"c")}


def test_times_choose_the_records_by_their_timestamps(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    base = int(time.time() * 1000) - 3_600_000
    for tp, log in rig.broker.logs.items():
        if tp.topic == "complaints":
            log[:] = [dataclasses.replace(r, timestamp=base + r.offset * 1000) for r in log]
    since = datetime.fromtimestamp((base + 1000) / 1000, UTC).isoformat().replace("+00:00", "Z")
    status, out, err = run(
        capsys,
        "--model",
        rig.b,
        "--to",
        "r",
        "--json",
        "--since",
        since,
        "--until",
        str(base + 3000),
    )
    assert status == 0, err
    spans = json.loads(out)["spans"]
    assert all((s["start"], s["end"]) == (1, 3) for s in spans), spans


def test_a_dry_run_resolves_the_range_and_sends_nothing(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "--model", rig.b, "--to", "replay-b", "--dry-run")
    assert status == 0, err
    assert "dry run: nothing scored or sent" in out and "complaints partition 0: offsets 0-" in out
    assert rig.broker.partitions("replay-b") == []


@pytest.mark.parametrize("topic", TOPICS)
def test_the_system_topics_are_refused_before_anything_connects(
    rig: Rig, capsys: pytest.CaptureFixture[str], topic: str
) -> None:
    before = {tp: len(log) for tp, log in rig.broker.logs.items()}
    status, out, err = run(capsys, "--model", rig.b, "--to", topic)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"allocator replay: error: refusing to write a replay into {topic}")
    assert {tp: len(log) for tp, log in rig.broker.logs.items()} == before and rig.reads == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start-offset", "5", "--end-offset", "5"], "bad range: start offset 5 is not before"),
        (["--start-offset", "-1"], "bad range: offsets, partitions and times are never negative"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "bad range: start time 2026-02-01"),
        (["--since", "yesterday"], "--since 'yesterday': not a time"),
        (["--partition", "7"], "topic complaints has no partition [7]"),
        (["--start-offset", "999"], "the range selects no record of complaints"),
        (["--topic", "nope"], "topic nope does not exist"),
        (["--published-within", "soon"], "--published-within 'soon': not a duration"),
        (["--model", "ghost@1"], "model ghost@1 is not registered"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_sent(
    rig: Rig, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    model = [] if "--model" in argv else ["--model", rig.b]
    status, out, err = run(capsys, *model, "--to", "replay-x", *argv)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"allocator replay: error: {message}"), err
    assert rig.broker.partitions("replay-x") == []


def test_a_strategy_file_is_validated_against_the_registry(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = transitions.next_doc(None, {t: TaskPlan("champion", "ghost@1") for t in TASKS}, "r", "me")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    status, _, err = run(capsys, "--strategy", str(path), "--to", "replay-x")
    assert status == 2 and "invalid strategy" in err and "ghost@1 is not registered" in err
    status, _, err = run(capsys, "--strategy", str(tmp_path / "missing.json"), "--to", "replay-x")
    assert status == 2 and err.strip().endswith("missing.json: no such file")
    assert rig.broker.partitions("replay-x") == []


def test_without_an_output_the_command_says_where_to_send(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "--model", rig.b)
    assert status == 2 and "--to TOPIC and/or --jsonl FILE" in err


def test_records_the_broker_refuses_stop_the_replay_with_one_line(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.sender.fail(1, kerrors.MessageSizeTooLargeError("too large"))
    status, _, err = run(capsys, "--model", rig.b, "--to", "replay-b")
    assert status == 2 and "replay to replay-b: 1 records were not delivered" in err


def test_a_partition_that_stops_short_of_its_end_is_a_broker_error() -> None:
    broker = MemoryBroker()
    for i in range(3):
        broker.append("t", b"x", key=str(i).encode())
    reader = MemoryReader(broker)
    batches = read(reader, "t", [Span(0, 0, 10)], 100, poll_ms=0, stall_s=0.0)  # type: ignore[arg-type]
    assert len(next(batches)) == 3
    with pytest.raises(BrokerError, match="nothing readable from t"):
        next(batches)


def test_a_selection_refuses_contradictions() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Selection("t", start_offset=1, since_ms=5)
    with pytest.raises(ConfigError, match="not both"):
        Selection("t", end_offset=1, until_ms=5)
    broker = MemoryBroker()
    broker.create("t")
    with pytest.raises(ConfigError, match="selects no record"):
        resolve(MemoryReader(broker), Selection("t"))  # type: ignore[arg-type]


def test_every_system_topic_is_protected_and_named() -> None:
    protected = protected_topics(CommonSettings(), "mirror")
    assert set(protected) == {*TOPICS, "mirror"}
    assert "case system" in protected["allocations"]
    check_target("replay-2026-12", protected)
    with pytest.raises(ConfigError, match="not a Kafka topic name"):
        check_target("a topic", protected)


def test_a_model_without_the_routing_heads_cannot_be_replayed() -> None:
    with pytest.raises(StrategyValidationError, match="has no issue/vulnerable head"):
        model_strategy("m@1", ["team"])


def test_times_and_durations_parse() -> None:
    assert parse_time("1700000000000", "--since") == 1_700_000_000_000
    assert parse_time("2026-01-01T00:00:00Z", "--since") == parse_time("2026-01-01", "--since")
    assert parse_duration("90s", "x") == 90_000 and parse_duration("6h", "x") == 21_600_000


def test_records_that_arrive_during_a_replay_are_left_for_the_next_one() -> None:
    broker = MemoryBroker()
    for _ in range(4):
        broker.append("t", b"x")

    class Growing(MemoryReader):
        """A live topic: a record arrives with every poll."""

        def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
            broker.append("t", b"late")
            return super().poll(timeout_ms, max_records)

    reader = Growing(broker)
    spans = resolve(reader, Selection("t"))  # type: ignore[arg-type]
    got = [r for batch in read(reader, "t", spans, 2) for r in batch]  # type: ignore[arg-type]
    assert [r.offset for r in got] == [0, 1, 2, 3] and len(broker.records("t")) > 4
