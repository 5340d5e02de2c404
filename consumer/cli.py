"""``allocator``: the one console command. Errors of ours print one line and exit 2, never a
traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from consumer.errors import AllocationError

Handler = Callable[[argparse.Namespace], int]


def _produce(args: argparse.Namespace) -> int:
    from consumer.produce import Report, csv_complaints, jsonl_complaints, produce
    from consumer.settings import CommonSettings, load

    settings = load(CommonSettings)
    report = Report()
    if bool(args.csv) == bool(args.jsonl):
        raise AllocationError("give exactly one of --csv FILE or --jsonl FILE")
    docs = (
        csv_complaints(Path(args.csv), report, args.split)
        if args.csv
        else jsonl_complaints(Path(args.jsonl), report)
    )
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
    from consumer.settings import ConsumerSettings, load

    return consume(load(ConsumerSettings))


def _topics(args: argparse.Namespace) -> int:
    from consumer.kafka import ensure_topics
    from consumer.settings import CommonSettings, load

    s = load(CommonSettings)
    created = ensure_topics(
        s, [s.topic_complaints, s.topic_allocations, s.topic_shadow, s.topic_dlq, s.topic_feedback]
    )
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="allocator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("produce", help="publish complaints from a CFPB CSV or JSON lines")
    pr.add_argument("--csv", help="CSV(.gz) with the CFPB columns")
    pr.add_argument("--jsonl", help="JSON lines of complaint/v1 documents")
    pr.add_argument("--topic", help="default: ALLOCATOR_TOPIC_COMPLAINTS")
    pr.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)"
    )
    pr.add_argument("--limit", type=int, help="stop after this many messages")
    pr.add_argument("--split", help="CSV only: rows of this split (train/val/test/holdout)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_produce)

    sub.add_parser(
        "consume", help="allocate complaints (settings from the environment)"
    ).set_defaults(func=_consume)
    tp = sub.add_parser("topics", help="topic administration")
    tp.add_argument("action", choices=["create"])
    tp.set_defaults(func=_topics)

    from consumer.cli_models import add_model_commands
    from consumer.promoter.cli import add_promoter_commands

    add_model_commands(sub)
    add_promoter_commands(sub)
    try:
        from explainer.cli import add_explain_commands
    except ImportError:  # the consumer image has no explainer (shap is in the `explain` extra)
        pass
    else:
        add_explain_commands(sub)
    return p


def dispatch(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command: our errors become one line on stderr and exit 2, Ctrl-C exits 130."""
    try:
        return int(args.func(args))
    except AllocationError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return dispatch(args, f"allocator {args.command}")


def print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
