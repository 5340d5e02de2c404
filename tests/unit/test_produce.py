"""``allocator produce``: the input is checked before anything connects, and a record the broker
does not acknowledge is an error, not a silent loss."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import allocator
from consumer import produce as produce_module
from consumer.errors import BrokerError, InputError
from consumer.produce import Report, csv_complaints, jsonl_complaints, produce
from consumer.settings import CommonSettings

HEADER = "Complaint ID,Consumer complaint narrative,Product\n"


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to create the producer fails the test: the input must be refused first."""

    def connect(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("KafkaProducer was created before the input was checked")

    monkeypatch.setattr(produce_module, "KafkaProducer", connect)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "flag", "message"),
    [
        ("missing.csv", None, "--csv", "no such file"),
        ("header.csv", "id,narrative\n1,text\n", "--csv", "missing column(s)"),
        ("empty.csv", "", "--csv", "missing column(s)"),
        ("fake.csv.gz", HEADER, "--csv", "line 1"),  # not gzip at all
        ("missing.jsonl", None, "--jsonl", "no such file"),
        ("rows.jsonl", HEADER, "--jsonl", "line 1 is not JSON"),
        ("list.jsonl", "\n[1, 2]\n", "--jsonl", "line 2 is a JSON list, not an object"),
        ("blank.jsonl", "\n\n", "--jsonl", "no JSON lines"),
    ],
)
def test_a_bad_input_is_one_line_and_exit_2_before_any_connection(
    tmp_path: Path,
    no_kafka: None,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | None,
    flag: str,
    message: str,
) -> None:
    path = tmp_path / name if content is None else _write(tmp_path / name, content)
    status = allocator.main(["produce", flag, str(path), "--quiet"])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"allocator produce: error: {path}: ") and message in err


def test_a_folder_is_not_an_input_file(tmp_path: Path, no_kafka: None) -> None:
    with pytest.raises(InputError, match="not a file"):
        csv_complaints(tmp_path, Report())


def test_good_inputs_are_read_lazily_with_their_skips_counted(tmp_path: Path) -> None:
    csv_path = tmp_path / "c.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8") as f:
        f.write(HEADER + '1,"My card was charged twice",Card\n2,,Card\n,orphan text,Card\n')
    report = Report()
    docs = list(csv_complaints(csv_path, report))
    assert [d["complaint_id"] for d in docs] == ["1"]
    assert docs[0]["metadata"] == {"product": "Card"}
    assert report.skipped == {"empty_text": 1, "no_complaint_id": 1}

    jsonl = _write(tmp_path / "c.jsonl", '{"text": "first"}\nnot json\n\n{"text": " "}\n')
    report = Report()
    docs = list(jsonl_complaints(jsonl, report))
    assert docs == [{"text": "first", "schema": "complaint/v1", "complaint_id": "c-1"}]
    assert report.skipped == {"not_json": 1, "empty_text": 1}


def test_an_unreadable_row_later_on_is_an_input_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    good = b"".join(b'%d,"a fine narrative",Card\n' % i for i in range(1, 1001))  # > one read
    path.write_bytes(HEADER.encode() + good + b'1001,"caf\xe9",Card\n')
    docs = csv_complaints(path, Report())  # the header is fine
    assert next(docs)["complaint_id"] == "1"
    with pytest.raises(InputError, match=r"bad\.csv: line \d+: .*utf-8"):
        list(docs)


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, callback: Callable[[Exception], object]) -> None:
        if self.error is not None:  # the real client calls back once the send has failed
            callback(self.error)


class _Producer:
    """Stands in for KafkaProducer: every second record is refused by the 'broker'."""

    def __init__(self, **config: Any) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent.append((topic, key, value))
        return _Future(RuntimeError("MessageSizeTooLargeError") if len(self.sent) % 2 else None)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_records_the_broker_refused_are_an_error_after_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[_Producer] = []

    def producer_factory(**config: Any) -> _Producer:
        made.append(_Producer(**config))
        return made[-1]

    monkeypatch.setattr(produce_module, "KafkaProducer", producer_factory)
    docs = iter([{"complaint_id": str(i), "text": "t"} for i in range(4)])
    report = Report()
    with pytest.raises(BrokerError, match=r"2 of 4 records were not delivered"):
        produce(CommonSettings(), "complaints", docs, report, progress=False)
    (producer,) = made
    assert producer.closed and [key for _, key, _ in producer.sent] == [b"0", b"1", b"2", b"3"]
