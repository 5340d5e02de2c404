"""``allocator models ...`` and ``allocator strategy ...``: the registry and the strategy from a
shell.

Every change prints the resulting strategy version; ``--task`` limits a change to one task (default:
every task the strategy, or the model, has); ``--reason`` is recorded in the strategy document and
its history.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer import strategy
from consumer.cli_help import HUB, RAW, REDIS, settings_epilog
from consumer.errors import InputError
from consumer.settings import ConsumerSettings
from consumer.strategy import Strategy, TaskPlan

Transition = Callable[[Strategy | None], Mapping[str, TaskPlan]]

FETCH_SETTINGS = (*REDIS, "model_cache_dir", "hub_offline")

if TYPE_CHECKING:
    from consumer.registry import Registry
    from consumer.store import StrategyStore


def _stores() -> tuple[Registry, StrategyStore]:
    from consumer import store
    from consumer.registry import Registry
    from consumer.settings import load
    from consumer.store import StrategyStore

    s = load(ConsumerSettings)
    client = store.connect(s)
    registry = Registry(client, s.redis_prefix, s.model_cache_dir, s.hub_offline)
    return registry, StrategyStore(client, s.redis_prefix, registry)


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def _check_package(location: str) -> None:
    """A package folder must exist before anything connects (the registry checks hub refs)."""
    if not location.startswith("hf://") and not Path(location).is_dir():
        raise InputError(f"{location}: no such folder (a package folder, or an hf:// ref)")


def _models(args: argparse.Namespace) -> int:
    if args.action == "register":
        _check_package(args.location)
    registry, _ = _stores()
    if args.action == "register":
        entry = registry.register(args.location)
        print(f"{entry.ref} sha256:{entry.digest}")
    elif args.action == "list":
        for e in registry.list():
            print(
                f"{e.ref}\tsha256:{e.digest[:12]}\ttasks:{','.join(sorted(e.tasks))}\t{e.registered_at}"
            )
    else:
        e = registry.get(args.location)
        _print_json(
            {
                "ref": e.ref,
                "digest": e.digest,
                "source": e.source,
                "registered_at": e.registered_at,
                "manifest": e.manifest,
            }
        )
    return 0


def transition(args: argparse.Namespace, model_tasks: Collection[str]) -> Transition:
    """The strategy transition a parsed ``allocator strategy`` command asks for."""
    task = args.task
    if args.action == "champion":
        return lambda cur: strategy.champion(cur, args.model, model_tasks, task)
    if args.action == "canary":
        return lambda cur: strategy.canary(cur, args.model, args.weight, task)
    if args.action == "shadow":
        return lambda cur: strategy.shadow(cur, args.model, args.sample, task)
    if args.action == "promote":
        return lambda cur: strategy.promote(cur, task)
    return lambda cur: strategy.end(cur, task)


def _strategy(args: argparse.Namespace) -> int:
    registry, store = _stores()
    if args.action == "show":
        current = store.current()
        _print_json(current.to_doc() if current else {"strategy": None})
        return 0
    if args.action == "history":
        current = store.current()
        for n, s in enumerate(([current] if current else []) + store.history(args.limit)):
            modes = ",".join(f"{t}={p.mode}" for t, p in sorted(s.tasks.items()))
            mark = "current" if n == 0 and current else "       "
            print(f"v{s.version}\t{mark}\t{s.updated_at}\t{s.updated_by}\t{modes}\t{s.reason}")
        return 0
    reason = args.reason or f"allocator strategy {args.action}"
    if args.action == "rollback":
        new = store.rollback(reason, _who())
    else:
        model_tasks = registry.get(args.model).tasks if getattr(args, "model", None) else {}
        new = store.update(transition(args, model_tasks), reason, _who())
    modes = ", ".join(f"{t}={p.mode}" for t, p in sorted(new.tasks.items()))
    print(f"strategy version {new.version}: {modes}")
    return 0


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # what these commands read of ConsumerSettings (``_stores``); registering may fetch from the hub
    fetching = settings_epilog(ConsumerSettings, FETCH_SETTINGS, extra=HUB)
    redis_only: dict[str, Any] = {
        "epilog": settings_epilog(ConsumerSettings, REDIS),
        "formatter_class": RAW,
    }
    m = sub.add_parser(
        "models", help="the model registry in Redis", epilog=fetching, formatter_class=RAW
    )
    msub = m.add_subparsers(dest="action", required=True)
    msub.add_parser(
        "register", help="verify and register a package", epilog=fetching, formatter_class=RAW
    ).add_argument("location", help="a package folder, or hf://owner/repo@<commit>")
    msub.add_parser("list", help="registered versions", **redis_only)
    msub.add_parser("show", help="one version's manifest", **redis_only).add_argument(
        "location", metavar="NAME@VERSION"
    )
    m.set_defaults(func=_models)

    s = sub.add_parser("strategy", help="the deployment strategy in Redis", **redis_only)
    ssub = s.add_subparsers(dest="action", required=True)
    ssub.add_parser("show", **redis_only)
    ssub.add_parser("history", **redis_only).add_argument("--limit", type=int, default=20)
    for name, helptext in (
        ("champion", "serve MODEL and publish it"),
        ("canary", "publish MODEL for a share of complaints"),
        ("shadow", "score MODEL too, never publish it"),
        ("promote", "the challenger becomes champion"),
        ("end", "end the experiment; the champion stays"),
        ("rollback", "back to the previous strategy version"),
    ):
        c = ssub.add_parser(name, help=helptext, **redis_only)
        if name in ("champion", "canary", "shadow"):
            c.add_argument("model", metavar="NAME@VERSION")
        if name == "canary":
            c.add_argument("--weight", type=float, required=True, help="share of complaints, 0..1")
        if name == "shadow":
            c.add_argument(
                "--sample", type=float, default=1.0, help="share of complaints scored, 0..1"
            )
        if name != "rollback":
            c.add_argument("--task", help="only this task (default: every task)")
        c.add_argument("--reason", help="why (recorded in the strategy history)")
    s.set_defaults(func=_strategy)
