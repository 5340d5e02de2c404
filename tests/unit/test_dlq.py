"""Dead letters on the in-memory Kafka double: what ``dlq list`` shows (never the text unless
asked), and the redrive protocol: matching records go back with ``redrive.*`` headers in one
transaction with the cursor, a rerun sends nothing twice, a failure mid-way resumes where the last
commit left, a dry run moves nothing, and a record that fails again comes back with its count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka import errors as kerrors

from consumer import dlq, ranges
from consumer.dlq import dlq_headers
from consumer.errors import BrokerError, ConfigError
from consumer.kafka_memory import MemoryBroker, MemoryProducer, MemoryReader, MemoryRecord
from consumer.plan import Plan
from tests.unit.test_loop import Rig
from tests.unit.test_router import plan_for

DLQ = "complaints.dlq"
GROUP = "g.redrive.test"
OUTPUTS = frozenset({"allocations", "allocations.shadow", DLQ, "complaints.feedback"})


def dead(
    broker: MemoryBroker,
    code: str,
    offset: int,
    value: bytes = b'{"text": "my private words"}',
    attempt_headers: Sequence[tuple[str, bytes]] = (),
) -> MemoryRecord:
    """A DLQ record as the loop writes it, for a source record at ``complaints/0:offset``."""
    src = MemoryRecord("complaints", 0, offset, 0, f"c{offset}".encode(), value, attempt_headers)
    return broker.append(
        DLQ, value, key=src.key, partition=0, headers=dlq_headers(src, code, "boom: my private")
    )


@pytest.fixture
def broker() -> MemoryBroker:
    b = MemoryBroker()
    b.create(DLQ, 1)
    b.create("complaints", 1)
    return b


def job(**kw: object) -> dlq.Redrive:
    args: dict[str, object] = {
        "dlq": ranges.Selection(DLQ),
        "where": dlq.Filter(),
        "to": None,
        "default_topic": "complaints",
        "max_attempts": 3,
        "forbidden": OUTPUTS,
        **kw,
    }
    return dlq.Redrive(**args)  # type: ignore[arg-type]


def run(
    broker: MemoryBroker, j: dlq.Redrive, producer: MemoryProducer | None = None, batch: int = 100
) -> dlq.RedriveReport:
    reader = MemoryReader(broker, GROUP)
    return dlq.redrive(reader, producer, j, batch)  # type: ignore[arg-type]


def header(rec: MemoryRecord, name: str) -> str:
    return dict(rec.headers)[name].decode()


def test_a_dead_letter_reads_its_reason_source_and_attempt(broker: MemoryBroker) -> None:
    d = dlq.DlqRecord.of(dead(broker, "schema_violation", 7))
    assert (d.code, d.source_topic, d.source_partition, d.source_offset) == (
        "schema_violation",
        "complaints",
        0,
        7,
    )
    assert d.attempt == 1
    bare = dlq.DlqRecord.of(broker.append(DLQ, b"x", partition=0))  # written by hand: no headers
    assert (bare.code, bare.source_topic, bare.attempt) == (None, None, 1)


def test_rows_never_carry_the_text_or_the_message_unless_asked(broker: MemoryBroker) -> None:
    d = dlq.DlqRecord.of(dead(broker, "not_json", 1))
    assert "private" not in json.dumps(d.row())
    shown = d.row(show_text=True)
    assert "private" in shown["value"]
    assert shown["message"].startswith("boom")


def test_list_filters_by_code_and_source_offsets(broker: MemoryBroker) -> None:
    for i, code in enumerate(["not_json", "model_failure", "not_json", "empty_text"]):
        dead(broker, code, 10 + i)
    reader = MemoryReader(broker)
    sel = ranges.Selection(DLQ)
    found, scanned = dlq.listing(reader, sel, dlq.Filter(codes=frozenset({"not_json"})))  # type: ignore[arg-type]
    assert scanned == 4 and [d.source_offset for d in found] == [10, 12]
    where = dlq.Filter(source_topic="complaints", source_offsets=(11, 13))
    found, _ = dlq.listing(MemoryReader(broker), sel, where)  # type: ignore[arg-type]
    assert [d.source_offset for d in found] == [11, 12]
    found, _ = dlq.listing(MemoryReader(broker), sel, dlq.Filter(), limit=1)  # type: ignore[arg-type]
    assert len(found) == 1


def test_bad_selections_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown DLQ reason"):
        dlq.Filter(codes=frozenset({"surprise"}))
    with pytest.raises(ConfigError, match="empty"):
        dlq.Filter(source_offsets=(5, 5))
    with pytest.raises(ConfigError, match="output topic"):
        job(to="allocations")
    with pytest.raises(ConfigError, match="at least 1"):
        job(max_attempts=0)


def test_redrive_sends_matches_with_headers_and_a_rerun_sends_nothing(
    broker: MemoryBroker,
) -> None:
    dead(broker, "not_json", 3)
    dead(broker, "model_failure", 4)
    dead(broker, "not_json", 5)
    j = job(where=dlq.Filter(codes=frozenset({"not_json"})))
    report = run(broker, j, MemoryProducer(broker))
    sent = broker.records("complaints")
    assert (report.sent, report.scanned) == (2, 3)
    assert [r.key for r in sent] == [b"c3", b"c5"]
    assert sent[0].value == b'{"text": "my private words"}'  # the bytes, unchanged
    assert header(sent[0], "redrive.attempt") == "1"
    assert header(sent[0], "redrive.origin.offset") == "0"
    assert header(sent[1], "redrive.source.offset") == "5"
    assert header(sent[0], "redrive.selection") == j.fingerprint()
    assert broker.committed[(GROUP, TopicPartition(DLQ, 0))] == 3  # past every record read
    again = run(broker, j, MemoryProducer(broker))
    assert (again.sent, again.scanned, again.cursor) == (0, 0, {0: 3})
    assert len(broker.records("complaints")) == 2


def test_a_failure_mid_redrive_resumes_after_the_last_commit(broker: MemoryBroker) -> None:
    for i in range(5):
        dead(broker, "not_json", i)
    producer = MemoryProducer(broker)

    def broker_goes_away(report: dlq.RedriveReport) -> None:
        if report.batches == 1:  # the first batch (2 records) is committed; the second fails
            producer.fail("commit", kerrors.KafkaConnectionError("broker gone"))

    reader = MemoryReader(broker, GROUP)
    with pytest.raises(BrokerError, match="redrive transaction"):
        dlq.redrive(reader, producer, job(), batch=2, on_batch=broker_goes_away)  # type: ignore[arg-type]
    assert [r.key for r in broker.records("complaints")] == [b"c0", b"c1"]
    assert producer.calls[-1] == "abort"
    report = run(broker, job(), MemoryProducer(broker), batch=2)
    assert report.cursor == {0: 2}
    assert [r.key for r in broker.records("complaints")] == [f"c{i}".encode() for i in range(5)]


def test_a_dry_run_counts_and_moves_nothing(broker: MemoryBroker) -> None:
    dead(broker, "not_json", 1)
    report = run(broker, job(), None)
    assert (report.sent, report.by_target) == (1, {"complaints": 1})
    assert broker.records("complaints") == []
    assert (GROUP, TopicPartition(DLQ, 0)) not in broker.committed


def test_records_that_failed_max_attempts_times_stay(broker: MemoryBroker) -> None:
    dead(broker, "model_failure", 1, attempt_headers=[("redrive.attempt", b"2")])  # 3rd failure
    dead(broker, "model_failure", 2)
    report = run(broker, job(), MemoryProducer(broker))
    assert (report.sent, report.exhausted) == (1, 1)
    assert [r.key for r in broker.records("complaints")] == [b"c2"]


def test_a_source_that_is_an_output_topic_needs_to(broker: MemoryBroker) -> None:
    src = MemoryRecord("allocations", 0, 1, 0, b"k", b"v")
    broker.append(DLQ, b"v", partition=0, headers=dlq_headers(src, "not_json", "x"))
    with pytest.raises(ConfigError, match="give --to"):
        run(broker, job(), MemoryProducer(broker))


def test_a_redriven_record_that_fails_again_returns_with_its_count(tiny: Path, tiny2: Path) -> None:
    plan: Plan = plan_for(tiny, tiny2)
    rig = Rig(lambda: plan, partitions=1)
    rig.broker.create(DLQ, 1)
    rig.feed([b"not json"])
    loop = rig.loop()
    loop.topics = type(loop.topics)(allocations="allocations", shadow="shadow", dlq=DLQ)
    rig.step(loop)
    first = rig.broker.records(DLQ)
    assert header(first[0], "dlq.attempt") == "1"
    run(rig.broker, job(), MemoryProducer(rig.broker))
    rig.step(loop)  # still not JSON: back to the DLQ
    second = rig.broker.records(DLQ)[-1]
    assert header(second, "dlq.attempt") == "2"
    assert header(second, "redrive.source.offset") == "0"  # where it first came from
    assert dlq.DlqRecord.of(second).attempt == 2


@pytest.fixture
def cli(broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch) -> MemoryBroker:
    """``allocator dlq`` over the in-memory broker."""
    from consumer import cli_dlq

    monkeypatch.setattr(
        cli_dlq,
        "CLIENTS",
        cli_dlq.Clients(
            reader=lambda _s, group: MemoryReader(broker, group or ""),
            producer=lambda _s, _txn: MemoryProducer(broker),
        ),
    )
    monkeypatch.setenv("ALLOCATOR_TOPIC_DLQ", DLQ)
    return broker


def test_the_list_command_shows_a_table_json_and_text_only_when_asked(
    cli: MemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    import allocator

    dead(cli, "not_json", 1)
    dead(cli, "empty_text", 2)
    assert allocator.main(["dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert "not_json" in out and "complaints/0:1" in out and "private" not in out
    assert out.rstrip().endswith(f"2 of 2 dead letters in {DLQ} match")
    assert allocator.main(["dlq", "list", "--json", "--code", "empty_text"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in rows] == ["complaints/0:2"]
    assert allocator.main(["dlq", "list", "--show-text", "--limit", "1"]) == 0
    assert "my private words" in capsys.readouterr().out


def test_the_redrive_command_dry_run_then_run(
    cli: MemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    import allocator

    dead(cli, "model_failure", 1)
    assert allocator.main(["dlq", "redrive", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would send 1 of 1 dead letters read")
    assert cli.records("complaints") == []
    assert allocator.main(["dlq", "redrive", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["sent"], doc["dry_run"], doc["by_code"]) == (1, False, {"model_failure": 1})
    assert doc["cursor_group"].startswith("complaints-allocation.redrive.")
    assert allocator.main(["dlq", "redrive", "--to", "allocations"]) == 2
    assert "output topic" in capsys.readouterr().err


def test_a_value_too_big_for_the_dlq_is_left_out_and_not_redriven(
    broker: MemoryBroker, tiny: Path, tiny2: Path
) -> None:
    from consumer.dlq import DLQ_MAX_VALUE_BYTES

    plan: Plan = plan_for(tiny, tiny2)
    rig = Rig(lambda: plan, partitions=1)
    rig.broker.create(DLQ, 1)
    rig.feed([b"x" * (DLQ_MAX_VALUE_BYTES + 1), b"not json"])
    loop = rig.loop()
    loop.topics = type(loop.topics)(allocations="allocations", shadow="shadow", dlq=DLQ)
    rig.step(loop)
    big, small = (dlq.DlqRecord.of(r) for r in rig.broker.records(DLQ))
    assert (big.code, big.value, big.omitted) == ("oversized", None, DLQ_MAX_VALUE_BYTES + 1)
    assert big.row()["bytes"] == DLQ_MAX_VALUE_BYTES + 1 and big.row()["value_omitted"]
    assert small.value == b"not json" and small.omitted is None
    report = run(rig.broker, job(), MemoryProducer(rig.broker))
    assert (report.sent, report.omitted) == (1, 1)
