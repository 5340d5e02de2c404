"""``allocator produce``: publish complaints from the CFPB CSV or JSON lines, at a rate or as fast
as possible.

Rows without text are skipped, counted and reported; a missing file or wrong columns end with a
clear ``InputError`` (the CLI prints it and exits 2), never a traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from tqdm import tqdm

from consumer.errors import InputError
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
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def csv_complaints(
    path: Path, report: Report, split: str | None = None
) -> Iterator[dict[str, Any]]:
    """complaint/v1 documents from a CSV with the CFPB columns (labels ride along under
    ``metadata``)."""
    with _open(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in (TEXT, ID) if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
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
            yield {"schema": "complaint/v1", "complaint_id": cid, "text": text, "metadata": meta}


def jsonl_complaints(path: Path, report: Report) -> Iterator[dict[str, Any]]:
    """complaint/v1 documents from JSON lines; lines that are not objects with a text are
    skipped."""
    with _open(path) as f:
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
    """Send ``docs`` keyed by complaint id; ``rate`` messages/s (0: as fast as possible)."""
    with map_kafka_errors("produce"):
        producer = KafkaProducer(
            **client_config(settings), acks="all", linger_ms=10, enable_idempotence=True
        )
    start = time.monotonic()
    bar = tqdm(total=limit, unit="msg", disable=not progress, desc=f"-> {topic}")
    try:
        for doc in docs:
            if limit is not None and report.sent >= limit:
                break
            if rate > 0:
                delay = start + report.sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(
                topic, key=str(doc["complaint_id"]).encode(), value=json.dumps(doc).encode()
            )
            report.sent += 1
            bar.update()
        with map_kafka_errors("produce flush"):
            producer.flush()
    finally:
        bar.close()
        producer.close()
    return report
