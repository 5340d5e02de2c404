"""``allocator produce``: publish complaints from the CFPB CSV or JSON lines, at a rate or as fast
as possible.

Rows without text are skipped, counted and reported. The input is checked when
``csv_complaints``/``jsonl_complaints`` is called, before anything connects: a missing or unreadable
file, missing CSV columns or a first line that is not a JSON object end at once with a clear
``InputError`` (the CLI prints it and exits 2), never a traceback. Records the broker does not
acknowledge make ``produce`` raise ``BrokerError`` once the rest are flushed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from tqdm import tqdm

from consumer.errors import BrokerError, InputError
from consumer.kafka import client_config, map_kafka_errors
from consumer.settings import CommonSettings

TEXT, ID = "Consumer complaint narrative", "Complaint ID"
PASS_THROUGH = {
    "Product": "product",
    "product_family": "product_family",
    "Issue": "issue",
    "Tags": "tags",
    "Submitted via": "channel",
    "split": "split",
}


@dataclass
class Report:
    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _open(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _reading(path: Path, where: Callable[[], object]) -> Iterator[None]:
    """Errors while reading ``path`` become ``InputError`` naming the line ``where()`` returns."""
    try:
        yield
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # BadGzipFile is an OSError
        raise InputError(f"{path}: line {where()}: {exc}") from exc


def _check_csv(path: Path) -> None:
    with _open(path) as f, _reading(path, lambda: 1):
        fieldnames = csv.DictReader(f).fieldnames
    missing = [c for c in (TEXT, ID) if c not in (fieldnames or [])]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {fieldnames}")


def _check_jsonl(path: Path) -> None:
    with _open(path) as f, _reading(path, lambda: 1):
        first = next(((n, line) for n, line in enumerate(f, 1) if line.strip()), None)
    if first is None:
        raise InputError(f"{path}: no JSON lines in it")
    n, line = first
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{path}: line {n} is not JSON ({exc}); expected JSON lines") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: line {n} is a JSON {type(doc).__name__}, not an object")


def csv_complaints(
    path: Path, report: Report, split: str | None = None
) -> Iterator[dict[str, Any]]:
    """complaint/v1 documents from a CSV with the CFPB columns (labels ride along under
    ``metadata``). The file and its header are checked now; rows are read as they are asked for."""
    _check_csv(path)
    return _csv_rows(path, report, split)


def _csv_rows(path: Path, report: Report, split: str | None) -> Iterator[dict[str, Any]]:
    with _open(path) as f:
        reader = csv.DictReader(f)
        with _reading(path, lambda: reader.line_num):
            for row in reader:
                if split and row.get("split") != split:
                    continue
                text, cid = (row.get(TEXT) or "").strip(), (row.get(ID) or "").strip()
                if not text:
                    report.skip("empty_text")
                    continue
                if not cid:
                    report.skip("no_complaint_id")
                    continue
                meta = {v: row[k] for k, v in PASS_THROUGH.items() if row.get(k)}
                yield {
                    "schema": "complaint/v1",
                    "complaint_id": cid,
                    "text": text,
                    "metadata": meta,
                }


def jsonl_complaints(path: Path, report: Report) -> Iterator[dict[str, Any]]:
    """complaint/v1 documents from JSON lines; lines that are not objects with a text are skipped.
    The file and its first line are checked now; the rest is read as it is asked for."""
    _check_jsonl(path)
    return _jsonl_docs(path, report)


def _jsonl_docs(path: Path, report: Report) -> Iterator[dict[str, Any]]:
    n = 0
    with _open(path) as f, _reading(path, lambda: n + 1):
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                report.skip("not_json")
                continue
            if not isinstance(doc, dict) or not str(doc.get("text", "")).strip():
                report.skip("empty_text")
                continue
            doc.setdefault("schema", "complaint/v1")
            doc.setdefault("complaint_id", f"{path.stem}-{n}")
            yield doc


def produce(
    settings: CommonSettings,
    topic: str,
    docs: Iterator[dict[str, Any]],
    report: Report,
    rate: float = 0.0,
    limit: int | None = None,
    progress: bool = True,
) -> Report:
    """Send ``docs`` keyed by complaint id; ``rate`` messages/s (0: as fast as possible).

    Idempotent (``acks=all``): the client's own retries never duplicate a record, but sending the
    same document again makes a second record. Raises ``BrokerError`` when the broker cannot be
    reached, or after the flush when any record was not acknowledged."""
    with map_kafka_errors("produce", settings):
        producer = KafkaProducer(
            **client_config(settings), acks="all", linger_ms=10, enable_idempotence=True
        )
    failed: list[Exception] = []
    start = time.monotonic()
    bar = tqdm(total=limit, unit="msg", disable=not progress, desc=f"-> {topic}")
    try:
        with map_kafka_errors(f"produce to {topic}", settings):
            for doc in docs:
                if limit is not None and report.sent >= limit:
                    break
                if rate > 0:
                    delay = start + report.sent / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                future = producer.send(
                    topic, key=str(doc["complaint_id"]).encode(), value=json.dumps(doc).encode()
                )
                future.add_errback(failed.append)  # called on the client's I/O thread
                report.sent += 1
                bar.update()
            producer.flush()
    finally:
        bar.close()
        producer.close()
    if failed:
        raise BrokerError(
            f"produce to {topic}: {len(failed)} of {report.sent} records were not delivered; "
            f"first: {failed[0]}"
        )
    return report
