"""``allocator promoter [status | export --out FILE.jsonl | evaluate --replay-topic TOPIC]``: run
the service, print its state, export labels, evaluate a replay on the joined feedback.

Wired into the main CLI by ``add_promoter_commands(sub)``; ``python -m promoter`` runs the
same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from consumer.cli_help import RAW, settings_epilog
from consumer.errors import InputError
from consumer.settings import PromoterSettings


def _run(args: argparse.Namespace) -> int:
    from consumer.settings import load

    settings = load(PromoterSettings)
    if args.promoter_action == "status":
        return _status(settings)
    if args.promoter_action == "export":
        return _export(settings, Path(args.out))
    if args.promoter_action == "evaluate":
        from promoter.offline import evaluate_cli

        return evaluate_cli(settings, args.replay_topic, args.replay_id, args.json)
    from promoter.app import promote

    return promote(settings)


def _status(settings: PromoterSettings) -> int:
    from consumer import store
    from promoter.app import build_evaluator, policy_of
    from promoter.state import JoinStore
    from promoter.status import status

    client = store.connect(settings)
    try:
        doc = status(
            JoinStore(client, settings.redis_prefix, settings.join_ttl_s),
            build_evaluator(settings, client),
            policy_of(settings),
        )
    finally:
        client.close()
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    return 0


def _export(settings: PromoterSettings, out: Path) -> int:
    from consumer import store
    from promoter.export import export

    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: no such folder")
    client = store.connect(settings)
    try:
        report = export(settings, client, out)
    finally:
        client.close()
    print(json.dumps({"out": str(out), **report.to_dict()}, sort_keys=True))
    return 0


def add_promoter_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    helped: dict[str, Any] = {"epilog": settings_epilog(PromoterSettings), "formatter_class": RAW}
    p = sub.add_parser(
        "promoter",
        help="join feedback, report live accuracy, promote or roll back experiments",
        **helped,
    )
    psub = p.add_subparsers(dest="promoter_action")
    psub.add_parser("run", help="run the service (the default)", **helped)
    psub.add_parser("status", help="print a JSON summary of the promoter state", **helped)
    ex = psub.add_parser(
        "export",
        help="write joined feedback with complaint text as JSON lines for training",
        **helped,
    )
    ex.add_argument("--out", required=True, help="FILE.jsonl")
    ev = psub.add_parser(
        "evaluate",
        help="accuracy of a replay (allocator replay) on the joined feedback, next to published",
        **helped,
    )
    ev.add_argument("--replay-topic", required=True, metavar="TOPIC", help="what replay --to wrote")
    ev.add_argument("--replay-id", help="only this run (the replay.id header; default: all)")
    ev.add_argument("--json", action="store_true", help="the evaluation as JSON")
    p.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """``python -m promoter``: the same commands without the rest of the CLI."""
    from consumer.cli import dispatch

    parser = argparse.ArgumentParser(prog="allocator")
    sub = parser.add_subparsers(dest="command", required=True)
    add_promoter_commands(sub)
    args = parser.parse_args(["promoter", *(sys.argv[1:] if argv is None else argv)])
    return dispatch(args, "allocator promoter")
