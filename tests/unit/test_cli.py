"""Every command's ``--help`` lists exactly the settings it reads (environment variable, default,
description), and never a secret's value. A new command must be added to ``READS`` below."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import allocator
from consumer.cli_help import settings_epilog
from consumer.settings import (
    CommonSettings,
    ConsumerSettings,
    ExplainerSettings,
    PromoterSettings,
    env_name,
)
from trainer.cli import build_parser as trainer_parser

KAFKA = [n for n in CommonSettings.model_fields if n.startswith("kafka_")]
REDIS = [n for n in CommonSettings.model_fields if n.startswith("redis_")]
TOPICS = ["topic_complaints", "topic_allocations", "topic_shadow", "topic_dlq", "topic_feedback"]
HUB = {"HF_TOKEN", "HF_ENDPOINT"}  # huggingface_hub's own variables, listed where models load


def every(cls: type[CommonSettings]) -> tuple[type[CommonSettings], list[str]]:
    return cls, list(cls.model_fields)


REGISTERING = (CommonSettings, [*REDIS, "model_cache_dir"])
FETCHING = (ConsumerSettings, [*REDIS, "model_cache_dir", "hub_offline"])
STRATEGY = (ConsumerSettings, REDIS)
DLQ_REDRIVE = (
    ConsumerSettings,
    [*KAFKA, *TOPICS, "consumer_group", "transaction_timeout_ms", "max_message_bytes"],
)

# what each command reads, worked out from its code (not from the help it renders)
READS: dict[str, tuple[type[CommonSettings], list[str]]] = {
    "produce": (CommonSettings, [*KAFKA, "topic_complaints"]),
    "consume": every(ConsumerSettings),
    "topics": (CommonSettings, [*KAFKA, *TOPICS, "topic_partitions", "topic_replication"]),
    "models": FETCHING,
    "models register": FETCHING,
    "models list": STRATEGY,
    "models show": STRATEGY,
    "strategy": STRATEGY,
    **{
        f"strategy {action}": STRATEGY
        for action in ("show", "history", "champion", "canary", "shadow", "promote", "end")
    },
    "strategy rollback": STRATEGY,
    "replay": (
        ConsumerSettings,
        [
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
        ],
    ),
    "dlq": DLQ_REDRIVE,
    "dlq list": (ConsumerSettings, [*KAFKA, "topic_dlq", "max_message_bytes"]),
    "dlq redrive": DLQ_REDRIVE,
    "promoter": every(PromoterSettings),
    "promoter run": every(PromoterSettings),
    "promoter status": every(PromoterSettings),
    "promoter export": every(PromoterSettings),
    "promoter evaluate": every(PromoterSettings),
    "explain": every(ExplainerSettings),
}
TRAINER_READS = {"register": REGISTERING, "push": REGISTERING, "train": REGISTERING}


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command under ``parser``, by its space-separated name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found |= commands(sub, f"{prefix}{name} ")
    return found


def listed(help_text: str) -> set[str]:
    """The variables in the help's settings section: the first word of each of its rows."""
    section = help_text.split("\nsettings (environment)", 1)[1]
    return set(re.findall(r"^  ([A-Z][A-Z0-9_]+)  ", section, flags=re.MULTILINE))


def test_every_command_says_what_it_reads() -> None:
    found = set(commands(allocator.build_parser()))
    assert found - READS.keys() == set(), "add the new command's settings to READS"
    assert READS.keys() - found <= {"explain"}, "READS names a command that is gone"


@pytest.mark.parametrize("command", sorted(READS))
def test_help_lists_the_settings_the_command_reads(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if command not in commands(allocator.build_parser()):
        pytest.skip(f"{command} is not installed here (its extra is missing)")
    cls, fields = READS[command]
    with pytest.raises(SystemExit) as done:
        allocator.main([*command.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    expected = {env_name(cls, f) for f in fields}
    assert expected <= listed(out), f"missing: {sorted(expected - listed(out))}"
    assert listed(out) - expected <= HUB, f"not read: {sorted(listed(out) - expected - HUB)}"


@pytest.mark.parametrize("command", sorted(TRAINER_READS))
def test_the_trainer_commands_that_register_list_the_redis_settings(command: str) -> None:
    cls, fields = TRAINER_READS[command]
    out = commands(trainer_parser())[command].format_help()
    assert listed(out) - HUB == {env_name(cls, f) for f in fields}


def test_a_row_is_the_variable_its_default_and_its_description() -> None:
    text = settings_epilog(ConsumerSettings, ["kafka_bootstrap_servers", "batch_max_messages"])
    rows = text.splitlines()
    assert rows[0] == "settings (environment):"
    assert re.fullmatch(
        r"  KAFKA_BOOTSTRAP_SERVERS\s+127\.0\.0\.1:9092\s+Comma-separated host:port list of Kafka"
        r" brokers\.",
        rows[1],
    )
    assert re.fullmatch(
        r"  ALLOCATOR_BATCH_MAX_MESSAGES\s+64\s+Upper bound of one micro-batch\.", rows[2]
    )
    assert "ALLOCATOR_SECRETS_DIR" in text and all(len(r) <= 100 for r in rows)


def test_secrets_show_as_secret_never_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("ALLOCATOR_EXPLAINER_TOKEN", "hunter2-token")
    text = allocator.build_parser().format_help() + "".join(
        p.format_help() for p in commands(allocator.build_parser()).values()
    )
    assert "hunter2" not in text
    row = settings_epilog(ExplainerSettings, ["explainer_token"]).splitlines()[1]
    assert re.fullmatch(r"  ALLOCATOR_EXPLAINER_TOKEN\s+\(secret\)\s+Bearer token.*", row)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "register", "{missing}"], "{missing}: no such folder"),
        (["explain", "d" * 32, "--html", "{missing}/x.html"], "{missing}/x.html: no such folder"),
    ],
)
def test_a_missing_path_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    missing = str(tmp_path / "missing")
    if argv[0] not in commands(allocator.build_parser()):
        pytest.skip(f"{argv[0]} is not installed here (its extra is missing)")
    status = allocator.main([a.format(missing=missing) for a in argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"allocator {argv[0]}: error: {message.format(missing=missing)}")
