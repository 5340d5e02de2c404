"""``allocator replay``: re-score a range of the input topic with a named model or a strategy, into
a topic of your choice (never one the system reads), and report agreement with what was published.

    allocator replay (--model NAME@VERSION | --strategy FILE | --current-strategy)
                     [--to TOPIC] [--jsonl FILE] [--dry-run]
                     [--topic TOPIC] [--partition N ...]
                     [--start-offset N | --since TIME] [--end-offset N | --until TIME]
                     [--published-within DURATION] [--json]

The steps are in ``consumer.replay``; docs/operations.md, "Replay and backfill", is the guide. What
can be refused (a forbidden topic, a bad range, an unknown model, a strategy the registry refuses, a
package that fails its digests) is refused before anything is sent, with one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from consumer.cli_args import parse_duration, parse_time
from consumer.cli_help import HUB, KAFKA, RAW, REDIS, TOPICS, settings_epilog
from consumer.errors import ConfigError, InputError
from consumer.settings import ConsumerSettings

if TYPE_CHECKING:  # not at run time: `allocator --help` must not load onnxruntime and Kafka
    from consumer.plan import Plan
    from consumer.ranges import Span
    from consumer.registry import Registry
    from consumer.replay import Replay, Report
    from consumer.strategy import Strategy

REPLAY_SETTINGS = (
    *KAFKA,
    *REDIS,
    *TOPICS,
    "topic_partitions",
    "topic_replication",
    "create_topics",
    "model_cache_dir",
    "hub_offline",
    "ort_threads",
    "max_sub_batch",
    "batch_max_messages",
    "max_message_bytes",
    "max_text_chars",
)
DESCRIPTION = """\
Re-score a range of the input topic with a registered model or a strategy into a topic of its own,
and report per task how far it agrees with the published allocations (joined on decision_id).
Records are allocation/v1 documents with replay.* headers; see docs/operations.md, "Replay and
backfill"."""


def _redis(settings: ConsumerSettings) -> Any:
    from consumer import store

    return store.connect(settings)


def _reader(settings: ConsumerSettings) -> Any:
    from consumer import kafka

    return kafka.reader(
        settings,
        max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 1024),
        fetch_max_bytes=kafka.FETCH_MAX_BYTES,
        allow_auto_create_topics=False,  # asking about a mistyped topic must not create it
    )


def _producer(settings: ConsumerSettings) -> Any:
    from kafka import KafkaProducer

    from consumer.kafka import client_config, map_kafka_errors

    with map_kafka_errors("replay producer", settings):
        return KafkaProducer(
            **client_config(settings), acks="all", enable_idempotence=True, linger_ms=20
        )


def _ensure_topic(settings: ConsumerSettings, topic: str) -> None:
    from consumer.kafka import ensure_topics

    if settings.create_topics:
        ensure_topics(settings, [topic])


@dataclass
class Clients:
    """How the command reaches Redis and Kafka; unit tests put fakeredis and the in-memory Kafka
    double (``consumer.kafka_memory``) here."""

    redis: Callable[[ConsumerSettings], Any] = _redis
    reader: Callable[[ConsumerSettings], Any] = _reader
    producer: Callable[[ConsumerSettings], Any] = _producer
    ensure_topic: Callable[[ConsumerSettings, str], None] = _ensure_topic


CLIENTS = Clients()


def _strategy_doc(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON strategy document ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a JSON {type(doc).__name__}, not a strategy document")
    return doc


def _check_args(args: argparse.Namespace, settings: ConsumerSettings, source: str) -> None:
    """What can be refused without a connection."""
    from consumer.replay import check_target, protected_topics

    if args.to:
        check_target(args.to, protected_topics(settings, source))
    elif not args.jsonl and not args.dry_run:
        raise ConfigError(
            "say where the replay goes: --to TOPIC and/or --jsonl FILE (or --dry-run)"
        )
    if args.jsonl and not Path(args.jsonl).parent.is_dir():
        raise InputError(f"{Path(args.jsonl).parent}: no such folder")


def _scoring(
    args: argparse.Namespace, client: Any, registry: Registry, settings: ConsumerSettings
) -> tuple[Strategy, str]:
    """What scores, validated against the registry, and its ``replay.of``."""
    from consumer import strategy
    from consumer.replay import model_strategy
    from consumer.store import StrategyStore

    if args.model:
        return model_strategy(args.model, registry.get(args.model).tasks), f"model:{args.model}"
    if args.strategy:
        chosen = strategy.parse(_strategy_doc(Path(args.strategy)), registry.tasks_of)
        return chosen, f"strategy:file:v{chosen.version}"
    current = StrategyStore(client, settings.redis_prefix, registry).current()
    if current is None:
        raise ConfigError(
            f"no strategy in Redis (prefix {settings.redis_prefix!r}): name a model with --model"
        )
    return current, f"strategy:redis:v{current.version}"


@contextlib.contextmanager
def _jsonl(path: str | None) -> Iterator[IO[str] | None]:
    """The JSON lines file, written to a temporary name and renamed once the replay succeeded."""
    if path is None:
        yield None
        return
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def execute(args: argparse.Namespace, settings: ConsumerSettings, clients: Clients) -> Report:
    """Run a parsed ``allocator replay``; returns its report (nothing is printed here)."""
    from consumer.inference import cpu_limit
    from consumer.plan import build_plan
    from consumer.ranges import Selection, describe, resolve
    from consumer.registry import Registry
    from consumer.replay import Report, published_only, replay_id

    source = args.topic or settings.topic_complaints
    selection = Selection(
        source,
        tuple(args.partition or ()),
        args.start_offset,
        args.end_offset,
        None if args.since is None else parse_time(args.since, "--since"),
        None if args.until is None else parse_time(args.until, "--until"),
    )
    window_ms = parse_duration(args.published_within, "--published-within")
    _check_args(args, settings, source)
    client = clients.redis(settings)
    try:
        registry = Registry(
            client, settings.redis_prefix, settings.model_cache_dir, settings.hub_offline
        )
        chosen, of = _scoring(args, client, registry, settings)
        reader = clients.reader(settings)
        try:
            spans = resolve(reader, selection)
            text = describe(source, spans)
            report = Report(replay_id(chosen, text), of, source, text, spans, args.to, args.jsonl)
            if args.dry_run:
                return report
            serving = published_only(chosen)
            packages = {ref: registry.load(ref) for ref in sorted(serving.models)}
            threads = settings.ort_threads or cpu_limit()
            plan = build_plan(serving, packages, None, threads, settings.max_sub_batch)
            limits = (settings.max_message_bytes, settings.max_text_chars)
            replay = _send(args, settings, clients, plan, report, limits, reader, spans)
            replay.agree(reader, settings.topic_allocations, window_ms, settings.batch_max_messages)
            return report
        finally:
            reader.close()
    finally:
        client.close()


def _send(
    args: argparse.Namespace,
    settings: ConsumerSettings,
    clients: Clients,
    plan: Plan,
    report: Report,
    limits: tuple[int, int],
    reader: Any,
    spans: list[Span],
) -> Replay:
    from consumer.replay import Output, Replay

    producer = None
    if args.to:
        clients.ensure_topic(settings, args.to)
        producer = clients.producer(settings)
    try:
        with _jsonl(args.jsonl) as lines:
            replay = Replay(plan, report, Output(producer, args.to, lines), limits)
            replay.run(reader, spans, settings.batch_max_messages)
    finally:
        if producer is not None:
            producer.close()
    return replay


def table(report: Report, dry_run: bool = False) -> str:
    """The report for people: counts and shares only, never a complaint's text."""
    where = " and ".join(x for x in (report.target, report.jsonl) if x) or "nowhere (dry run)"
    lines = [f"replay {report.replay_id} of {report.of} into {where}"]
    for s in report.spans:
        gone = f"; {s.gone} earlier offsets are gone (retention)" if s.gone else ""
        lines.append(
            f"  {report.source} partition {s.partition}: offsets {s.start}-{s.end} ({s.size}){gone}"
        )
    if dry_run:
        lines.append("dry run: nothing scored or sent")
        return "\n".join(lines)
    bad = ", ".join(f"{k}={v}" for k, v in sorted(report.undecodable.items())) or "none"
    lines += [
        f"read {report.read} records: replayed {report.replayed}, undecodable "
        f"{sum(report.undecodable.values())} ({bad}; dead-lettered live), model failures "
        f"{report.model_failures}",
        f"published allocations found for {report.published_found} of {report.replayed} "
        f"(read {report.published_scanned} records of {report.published_topic})",
        "",
        f"{'task':<16}{'replayed':>10}{'published':>11}{'agreed':>9}{'agreement':>11}",
    ]
    for task, c in sorted(report.tasks.items()):
        share = "-" if c.share is None else f"{c.share:.1%}"
        lines.append(f"{task:<16}{c.replayed:>10}{c.published:>11}{c.agreed:>9}{share:>11}")
    for task, models in sorted(report.published_models.items()):
        made = ", ".join(f"{m} ({n})" for m, n in models.most_common())
        lines.append(f"  {task} published by {made}")
    return "\n".join(lines)


def _replay(args: argparse.Namespace) -> int:
    from consumer.settings import load

    report = execute(args, load(ConsumerSettings), CLIENTS)
    if args.json:
        print(json.dumps(report.to_dict() | {"dry_run": args.dry_run}, indent=2, sort_keys=True))
    else:
        print(table(report, args.dry_run))
    return 0


def add_replay_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="re-score a range of the input topic with another model (never into allocations)",
        description=DESCRIPTION,
        epilog=settings_epilog(ConsumerSettings, REPLAY_SETTINGS, extra=HUB),
        formatter_class=RAW,
    )
    scorer = p.add_mutually_exclusive_group(required=True)
    scorer.add_argument("--model", metavar="NAME@VERSION", help="champion of every task it has")
    scorer.add_argument(
        "--strategy", metavar="FILE", help="a strategy/v1 document, validated like `strategy`"
    )
    scorer.add_argument(
        "--current-strategy", action="store_true", help="the strategy in force in Redis"
    )
    out = p.add_argument_group("output (at least one, unless --dry-run)")
    out.add_argument(
        "--to",
        metavar="TOPIC",
        help="created when missing; never allocations, complaints, the DLQ, shadow or feedback",
    )
    out.add_argument("--jsonl", metavar="FILE", help="JSON lines, e.g. for `trainer compare`")
    out.add_argument("--dry-run", action="store_true", help="resolve the range; send nothing")
    rng = p.add_argument_group("range (the end is exclusive; default: the topic as it is now)")
    rng.add_argument("--topic", help="topic to replay (default: ALLOCATOR_TOPIC_COMPLAINTS)")
    rng.add_argument(
        "--partition", type=int, action="append", metavar="N", help="repeatable; default: all"
    )
    start = rng.add_mutually_exclusive_group()
    start.add_argument("--start-offset", type=int, metavar="N", help="first offset replayed")
    start.add_argument("--since", metavar="TIME", help="RFC 3339 (UTC by default) or epoch ms")
    end = rng.add_mutually_exclusive_group()
    end.add_argument("--end-offset", type=int, metavar="N", help="first offset not replayed")
    end.add_argument("--until", metavar="TIME", help="records before TIME")
    p.add_argument(
        "--published-within",
        default="6h",
        metavar="DURATION",
        help="how long after its complaint a published allocation is looked for (default 6h)",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_replay)
