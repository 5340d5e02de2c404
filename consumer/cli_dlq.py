"""``allocator dlq list`` and ``allocator dlq redrive``: what is in the dead-letter topic, and send
it back to the input after a fix (``consumer.dlq`` holds the semantics and the redrive protocol).

Selections are the same for both verbs: by reason (``--code``, repeatable), by when the record
failed (``--since``/``--until``, RFC 3339 or epoch ms), by DLQ partition, by source coordinates.
Neither verb prints complaint text or error messages (which may quote it) without ``--show-text``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumer.cli_args import parse_time
from consumer.cli_help import KAFKA, RAW, TOPICS, settings_epilog
from consumer.errors import ConfigError
from consumer.settings import ConsumerSettings

if TYPE_CHECKING:  # not at run time: `allocator --help` must not load the Kafka client
    from consumer import dlq, ranges

LIST_SETTINGS = (*KAFKA, "topic_dlq", "max_message_bytes")
REDRIVE_SETTINGS = (
    *KAFKA,
    *TOPICS,
    "consumer_group",
    "transaction_timeout_ms",
    "max_message_bytes",
)
COLUMNS = (  # (heading, row key, width)
    ("DLQ", "at", 9),
    ("FAILED AT", "failed_at", 20),
    ("CODE", "code", 16),
    ("TRY", "attempt", 3),
    ("SOURCE", "source", 24),
    ("BYTES", "bytes", 7),
    ("KEY", "key", 0),
)


def _reader(settings: ConsumerSettings, group_id: str | None) -> Any:
    from consumer import kafka

    return kafka.reader(
        settings,
        group_id=group_id,
        max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 1024),
        allow_auto_create_topics=False,  # listing a mistyped topic must not create it
    )


def _producer(settings: ConsumerSettings, transactional_id: str) -> Any:
    from consumer import kafka

    return kafka.transactional_producer(settings, transactional_id)


@dataclass
class Clients:
    """How the commands reach Kafka; unit tests put the in-memory double here."""

    reader: Callable[[ConsumerSettings, str | None], Any] = _reader
    producer: Callable[[ConsumerSettings, str], Any] = _producer


CLIENTS = Clients()


def _dlq_range(args: argparse.Namespace, settings: ConsumerSettings) -> ranges.Selection:
    from consumer import ranges

    return ranges.Selection(
        settings.topic_dlq,
        partitions=tuple(sorted(set(args.partition or ()))),
        since_ms=None if args.since is None else parse_time(args.since, "--since"),
        until_ms=None if args.until is None else parse_time(args.until, "--until"),
    )


def _filter(args: argparse.Namespace) -> dlq.Filter:
    from consumer import dlq

    return dlq.Filter(
        codes=frozenset(args.code or ()),
        source_topic=args.source_topic,
        source_partition=args.source_partition,
        source_offsets=(args.source_from, args.source_to),
    )


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["  ".join(h.ljust(w) for h, _, w in COLUMNS).rstrip()]
    for row in rows:
        cells = {**row, "at": f"{row['partition']}:{row['offset']}"}
        lines.append(
            "  ".join(
                str(cells[k] if cells[k] is not None else "-").ljust(w) for _, k, w in COLUMNS
            )
        )
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from consumer import dlq
    from consumer.settings import load

    settings = load(ConsumerSettings)
    reader = CLIENTS.reader(settings, None)
    try:
        found, scanned = dlq.listing(reader, _dlq_range(args, settings), _filter(args), args.limit)
    finally:
        reader.close()
    rows = [d.row(args.show_text) for d in found]
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if rows:
        print(_table(rows))
        if args.show_text:
            for d, row in zip(found, rows, strict=True):
                print(f"\n{d.partition}:{d.offset} {row['message']}\n{row['value']}")
    more = (
        " (the first shown: --limit)" if args.limit is not None and len(rows) == args.limit else ""
    )
    print(f"{len(rows)} of {scanned} dead letters in {settings.topic_dlq} match{more}")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from consumer import dlq
    from consumer.settings import load

    settings = load(ConsumerSettings)
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    job = dlq.Redrive(
        dlq=_dlq_range(args, settings),
        where=_filter(args),
        to=args.to,
        default_topic=settings.topic_complaints,
        max_attempts=args.max_attempts,
        forbidden=frozenset(settings.output_topics()),
    )
    name = f"{settings.consumer_group}.redrive.{job.fingerprint()}"
    cursor = CLIENTS.reader(settings, name)
    producer = None if args.dry_run else CLIENTS.producer(settings, name)
    try:
        report = dlq.redrive(cursor, producer, job, args.batch_size)
    finally:
        cursor.close()
        if producer is not None:
            producer.close()
    _print_report(report, name, args)
    return 0


def _print_report(report: dlq.RedriveReport, name: str, args: argparse.Namespace) -> None:
    doc = {**report.as_dict(), "cursor_group": name, "dry_run": args.dry_run}
    if args.json:
        print(json.dumps(doc))
        return
    verb = "would send" if args.dry_run else "sent"
    targets = ", ".join(f"{t}={n}" for t, n in sorted(report.by_target.items())) or "-"
    codes = ", ".join(f"{c}={n}" for c, n in sorted(report.by_code.items())) or "-"
    print(f"{verb} {report.sent} of {report.scanned} dead letters read; by target: {targets}")
    print(f"by reason: {codes}")
    if report.exhausted:
        print(
            f"{report.exhausted} matching records already failed {args.max_attempts} times: left "
            "in the DLQ for a person (--max-attempts)"
        )
    if report.omitted:
        print(
            f"{report.omitted} matching records were too big to keep in the DLQ "
            "(dlq.value.omitted): their bytes are at their source coordinates (allocator dlq list)"
        )
    print(f"cursor: consumer group {name} (a rerun of this selection resumes there)")


def _selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code", action="append", metavar="REASON", help="DLQ reason (repeatable)")
    p.add_argument("--since", metavar="TIME", help="failed at or after (RFC 3339 or epoch ms)")
    p.add_argument("--until", metavar="TIME", help="failed before (RFC 3339 or epoch ms)")
    p.add_argument("--partition", type=int, action="append", help="DLQ partition (repeatable)")
    p.add_argument("--source-topic", help="records that came from this topic")
    p.add_argument("--source-partition", type=int, help="... from this partition of it")
    p.add_argument("--source-from", type=int, metavar="OFFSET", help="source offset, inclusive")
    p.add_argument("--source-to", type=int, metavar="OFFSET", help="source offset, exclusive")
    p.add_argument("--json", action="store_true", help="JSON (one object per line) for machines")


def add_dlq_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``dlq list`` and ``dlq redrive``."""
    top = sub.add_parser(
        "dlq",
        help="list and redrive dead letters",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=settings_epilog(ConsumerSettings, REDRIVE_SETTINGS),
        formatter_class=RAW,
    )
    verbs = top.add_subparsers(dest="dlq_command", required=True)
    ls = verbs.add_parser(
        "list",
        help="dead letters, filtered: a table, or --json",
        epilog=settings_epilog(ConsumerSettings, LIST_SETTINGS),
        formatter_class=RAW,
    )
    _selection_args(ls)
    ls.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    ls.add_argument(
        "--show-text", action="store_true", help="also the error message and the complaint text"
    )
    ls.set_defaults(func=_list)
    rd = verbs.add_parser(
        "redrive",
        help="send dead letters back to their input, exactly once",
        description="Send the selected dead letters back to their source topic (or --to) in "
        "transactions with a durable cursor: a killed redrive rerun with the same selection "
        "resumes and sends nothing twice.",
        epilog=settings_epilog(ConsumerSettings, REDRIVE_SETTINGS),
        formatter_class=RAW,
    )
    _selection_args(rd)
    rd.add_argument("--to", metavar="TOPIC", help="target topic (default: each record's source)")
    rd.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="leave records that failed this many times (default 3)",
    )
    rd.add_argument("--batch-size", type=int, default=100, help="records per transaction")
    rd.add_argument("--dry-run", action="store_true", help="count what would move; send nothing")
    rd.set_defaults(func=_redrive)
