"""``allocator promoter export --out FILE.jsonl``: joined feedback as a training set for the
trainer.

One JSON object per line, the format ``trainer.data.load_feedback`` reads: ``complaint_id``,
``text``, ``team``, ``issue``, ``vulnerable`` (bool), ``decided_at``, plus ``labels`` (every task's
final label), ``decision_id``, ``allocated_at`` and ``model_versions`` (task -> ``name@version``
that made the allocation).

The text is not kept by the promoter: it is read back from the complaints topic at the allocation's
source coordinates (assign + seek, one pass per run of nearby offsets), and checked against
``input_sha256``. Rows are skipped and counted by reason: ``not_retained`` (the offset is below the
log start: retention removed it), ``not_found`` (no record at that offset), ``input_changed``
(digest mismatch), ``unreadable`` (not a complaint document), ``expired`` (the joined state expired
before the export read it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from consumer.kafka import map_kafka_errors, reader
from consumer.settings import CommonSettings
from consumer.store import map_redis_errors
from promoter.records import AllocRec, FeedbackRec
from promoter.state import Keys

CHUNK = 5000  # joined complaints per pass: bounds memory, whatever the size of the export
MAX_GAP = 2000  # offsets closer than this are read in one sequential pass rather than seeking again
POLL_MS = 1000


@dataclass
class ExportReport:
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "skipped": dict(self.skipped)}


Wanted = dict[tuple[str, int], dict[int, tuple[str, AllocRec, FeedbackRec]]]


def _joined(client: redis.Redis, keys: Keys, report: ExportReport) -> Iterator[Wanted]:
    """Chunks of joined complaints, grouped by the (topic, partition) of their input."""
    with map_redis_errors("export read"):
        cids = [c.decode() for c, _ in client.zscan_iter(keys.joined, count=1000)]
    for start in range(0, len(cids), CHUNK):
        chunk = cids[start : start + CHUNK]
        with map_redis_errors("export read"):
            pipe = client.pipeline(transaction=False)
            for cid in chunk:
                pipe.hmget(keys.complaint(cid), ["a", "f"])
            values = pipe.execute()
        wanted: Wanted = defaultdict(dict)
        for cid, (a, f) in zip(chunk, values, strict=True):
            if a is None or f is None:
                report.skipped["expired"] += 1
                continue
            alloc = AllocRec.from_json(a)
            topic, partition, offset = alloc.source
            wanted[(topic, partition)][offset] = (cid, alloc, FeedbackRec.from_json(f))
        yield wanted


def _runs(offsets: list[int]) -> Iterator[list[int]]:
    run: list[int] = []
    for o in sorted(offsets):
        if run and o - run[-1] > MAX_GAP:
            yield run
            run = []
        run.append(o)
    if run:
        yield run


def _read(
    consumer: KafkaConsumer, tp: TopicPartition, offsets: list[int], end: int
) -> dict[int, bytes]:
    """Values at ``offsets`` (sorted, all below ``end``), in sequential passes."""
    found: dict[int, bytes] = {}
    consumer.assign([tp])
    for run in _runs(offsets):
        want = set(run)
        consumer.seek(tp, run[0])
        position = run[0]
        while position <= run[-1] and position < end:
            batch = consumer.poll(timeout_ms=POLL_MS).get(tp, [])
            if not batch:
                break  # nothing more to read (e.g. aborted records at the end of the log)
            for rec in batch:
                if rec.offset in want:
                    found[rec.offset] = rec.value
                position = rec.offset + 1
    return found


def _row(
    cid: str, alloc: AllocRec, fb: FeedbackRec, value: bytes, report: ExportReport
) -> dict[str, Any] | None:
    try:
        text = json.loads(value)["text"]
        assert isinstance(text, str)
    except (ValueError, KeyError, TypeError, AssertionError):
        report.skipped["unreadable"] += 1
        return None
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != alloc.input_sha256:
        report.skipped["input_changed"] += 1
        return None
    labels = fb.labels
    return {
        "complaint_id": cid,
        "text": text,
        "team": labels["team"],
        "issue": labels["issue"],
        "vulnerable": fb.vulnerable,
        "decided_at": fb.decided_at.isoformat(),
        "labels": labels,
        "decision_id": alloc.decision_id,
        "allocated_at": alloc.allocated_at.isoformat(),
        "model_versions": {t: p.model for t, p in sorted(alloc.predictions.items())},
    }


def export(settings: CommonSettings, client: redis.Redis, out: Path) -> ExportReport:
    """Write the export to ``out`` (atomically: a temporary file renamed at the end) and report
    it."""
    report, keys = ExportReport(), Keys(settings.redis_prefix)
    tmp = out.with_name(out.name + ".tmp")
    consumer = reader(settings)
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for wanted in _joined(client, keys, report):
                for (topic, partition), rows in sorted(wanted.items()):
                    tp = TopicPartition(topic, partition)
                    with map_kafka_errors("export fetch"):
                        begin = consumer.beginning_offsets([tp]).get(tp, 0)
                        end = consumer.end_offsets([tp]).get(tp, 0)
                        kept = [o for o in rows if begin <= o < end]
                        values = _read(consumer, tp, kept, end) if kept else {}
                    report.skipped["not_retained"] += sum(o < begin for o in rows)
                    report.skipped["not_found"] += sum(o >= end for o in rows) + len(
                        set(kept) - set(values)
                    )
                    for offset in sorted(values):
                        row = _row(*rows[offset], values[offset], report)
                        if row is not None:
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
                            report.rows += 1
        os.replace(tmp, out)
    finally:
        consumer.close()
        tmp.unlink(missing_ok=True)
    report.skipped = Counter({k: v for k, v in report.skipped.items() if v})
    return report
