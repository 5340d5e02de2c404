"""The core's ``allocator`` commands, and ``dispatch``: errors of ours print one line and exit 2,
never a traceback. The command itself is assembled in ``allocator`` (the composition root).

Every command's ``--help`` ends with the settings it reads (``consumer.cli_help``): a new command
names its settings class, or the fields of one it reads, in its parser's ``epilog``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from consumer.cli_dlq import add_dlq_commands
from consumer.cli_help import HUB, KAFKA, RAW, TOPICS, settings_epilog
from consumer.cli_replay import add_replay_command
from consumer.cli_strategy import add_model_commands
from consumer.errors import AllocationError
from consumer.settings import CommonSettings, ConsumerSettings

Handler = Callable[[argparse.Namespace], int]

PRODUCE_SETTINGS = (*KAFKA, "topic_complaints")
TOPICS_SETTINGS = (*KAFKA, *TOPICS, "topic_partitions", "topic_replication")


def _produce(args: argparse.Namespace) -> int:
    from consumer.produce import Report, csv_complaints, jsonl_complaints, produce
    from consumer.settings import load

    report = Report()
    # both check the file now, before the producer connects (a bad path must not wait on Kafka)
    docs = (
        csv_complaints(Path(args.csv), report, args.split)
        if args.csv
        else jsonl_complaints(Path(args.jsonl), report)
    )
    settings = load(CommonSettings)
    produce(
        settings,
        args.topic or settings.topic_complaints,
        docs,
        report,
        args.rate,
        args.limit,
        progress=not args.quiet,
    )
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
    print(f"sent {report.sent} complaints; skipped rows: {skipped}")
    return 0


def _consume(args: argparse.Namespace) -> int:
    from consumer.app import consume
    from consumer.settings import load

    return consume(load(ConsumerSettings))


def _topics(args: argparse.Namespace) -> int:
    from consumer.kafka import ensure_topics
    from consumer.settings import load

    s = load(CommonSettings)
    created = ensure_topics(
        s, [s.topic_complaints, s.topic_allocations, s.topic_shadow, s.topic_dlq, s.topic_feedback]
    )
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def add_core_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The core's commands: ``produce``, ``consume``, ``topics``, ``models``, ``strategy``,
    ``replay`` and ``dlq``."""
    pr = sub.add_parser(
        "produce",
        help="publish complaints from a CFPB CSV or JSON lines",
        description="Publish complaint/v1 records keyed by complaint id (docs/producers.md).",
        epilog=settings_epilog(CommonSettings, PRODUCE_SETTINGS),
        formatter_class=RAW,
    )
    source = pr.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", metavar="FILE", help="CSV(.gz) with the CFPB columns")
    source.add_argument("--jsonl", metavar="FILE", help="JSON lines of complaint/v1 documents")
    pr.add_argument("--topic", help="default: ALLOCATOR_TOPIC_COMPLAINTS")
    pr.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)"
    )
    pr.add_argument("--limit", type=int, help="stop after this many messages")
    pr.add_argument("--split", help="CSV only: rows of this split (train/val/test/holdout)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_produce)

    sub.add_parser(
        "consume",
        help="allocate complaints (settings from the environment)",
        epilog=settings_epilog(ConsumerSettings, extra=HUB),
        formatter_class=RAW,
    ).set_defaults(func=_consume)
    tp = sub.add_parser(
        "topics",
        help="topic administration",
        description="Create the project's topics that do not exist yet; existing ones are left.",
        epilog=settings_epilog(CommonSettings, TOPICS_SETTINGS),
        formatter_class=RAW,
    )
    tp.add_argument("action", choices=["create"])
    tp.set_defaults(func=_topics)

    add_model_commands(sub)
    add_replay_command(sub)
    add_dlq_commands(sub)


def dispatch(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command: our errors become one line on stderr and exit 2, Ctrl-C exits 130."""
    try:
        return int(args.func(args))
    except AllocationError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
