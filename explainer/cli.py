"""``allocator explain``: serve the HTTP API, or explain one decision from a shell.

    allocator explain serve
    allocator explain DECISION_ID [--task T] [--label L] [--html out.html] [--json out.json]
                                  [--text-file F] [--allocation record.json] [--index-timeout S]

The one-shot form finds the allocation like the server does (reading the allocations topic until the
decision shows up, or from ``--allocation``), writes the full ``explanation/v1`` JSON to stdout
unless ``--json`` names a file, and a one-line summary to stderr. Settings come from the environment
(``ExplainerSettings``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import socket
import sys
import time
from pathlib import Path

from consumer.cli_help import HUB, RAW, settings_epilog
from consumer.errors import InputError
from consumer.settings import ExplainerSettings

audit = logging.getLogger("explainer.audit")


def _serve(args: argparse.Namespace) -> int:
    from consumer.settings import load
    from explainer.app import serve

    return serve(load(ExplainerSettings))


def _one_shot(args: argparse.Namespace) -> int:
    from consumer import logs
    from consumer.settings import load
    from explainer.app import build
    from explainer.html import render
    from explainer.service import parse_allocation

    for out in (args.html, args.json):  # before the explanation, which takes seconds
        if out and not Path(out).parent.is_dir():
            raise InputError(f"{out}: no such folder {Path(out).parent}")
    settings = load(ExplainerSettings)
    logs.setup(settings.log_level)
    text = _read(args.text_file) if args.text_file else None
    started = time.monotonic()
    parts = build(settings)
    try:
        if args.allocation:
            try:
                allocation = parse_allocation(json.loads(_read(args.allocation)))
            except ValueError as exc:
                raise InputError(f"{args.allocation}: not JSON ({exc})") from exc
            if allocation.decision_id != args.target:
                raise InputError(
                    f"{args.allocation} holds decision {allocation.decision_id}, not {args.target}"
                )
        else:
            parts.indexer.catch_up(
                args.index_timeout, until=lambda: parts.index.get(args.target) is not None
            )
            allocation = parts.service.find(args.target)
        doc, _ = parts.service.explain(allocation, args.task, args.label, text)
    finally:
        parts.close()
    audit.info(
        "explanation request",
        extra={
            "who": f"cli:{getpass.getuser()}@{socket.gethostname()}",
            "route": "cli",
            "decision_id": args.target,
            "task": doc["task"],
            "label": doc["label"],
            "status": 200,
            "duration_ms": round(1000 * (time.monotonic() - started), 1),
        },
    )
    if args.html:
        Path(args.html).write_text(render(doc), encoding="utf-8")
    body = json.dumps(doc, indent=2)
    if args.json:
        Path(args.json).write_text(body + "\n", encoding="utf-8")
    else:
        print(body)
    add = doc["additivity"]
    print(
        f"{doc['task']}={doc['label']}: p={doc['output']:.4f} base={doc['base_value']:.4f} "
        f"additivity error {add['error']:.1e} ({'ok' if add['ok'] else 'FAILED'}); "
        f"{doc['explainer']['evals']} evaluations in {doc['explainer']['seconds']:.2f} s; model "
        f"{doc['model']['ref']}",
        file=sys.stderr,
    )
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from exc


def _explain(args: argparse.Namespace) -> int:
    return _serve(args) if args.target == "serve" else _one_shot(args)


def add_explain_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``explain`` to the ``allocator`` subcommands (``allocator.build_parser`` calls
    this)."""
    p = sub.add_parser(
        "explain",
        help="SHAP explanation of a past decision, or `explain serve` for the HTTP API",
        description=__doc__,
        epilog=settings_epilog(ExplainerSettings, extra=HUB),
        formatter_class=RAW,
    )
    p.add_argument(
        "target", metavar="DECISION_ID|serve", help="a decision id, or `serve` to run the HTTP API"
    )
    p.add_argument("--task", help="task to explain (default: team)")
    p.add_argument("--label", help="label to explain (default: the decided one)")
    p.add_argument("--html", metavar="FILE", help="also write the HTML page here")
    p.add_argument("--json", metavar="FILE", help="write the JSON here instead of stdout")
    p.add_argument(
        "--text-file",
        metavar="FILE",
        help="the complaint text (default: read from its source offset)",
    )
    p.add_argument(
        "--allocation",
        metavar="FILE",
        help="the allocation/v1 record as JSON (default: find it by id)",
    )
    p.add_argument(
        "--index-timeout", type=float, default=120.0, help="seconds to search the allocations topic"
    )
    p.set_defaults(func=_explain)
