"""Operator mistakes end in one line naming the setting to fix: the Kafka and Redis boundaries
(``consumer.kafka.map_kafka_errors``, ``consumer.store.map_redis_errors``), and a check that every
Kafka client the commands create is made inside the Kafka boundary."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import errors as kerrors
from kafka.net import manager

from consumer import store
from consumer.errors import BrokerError, ConfigError, StoreUnavailableError
from consumer.kafka import client_config, map_kafka_errors
from consumer.registry import Registry
from consumer.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
COMMAND_PACKAGES = ("allocator", "consumer", "promoter", "explainer", "trainer")


def test_an_unreachable_broker_names_the_servers_tried_and_the_setting() -> None:
    settings = CommonSettings(kafka_bootstrap_servers="10.0.0.7:9093,10.0.0.8:9093")
    # what kafka-python 3 raises when no bootstrap server answers (2.x: NoBrokersAvailable)
    assert "Unable to bootstrap from" in inspect.getsource(manager)
    with pytest.raises(BrokerError) as caught, map_kafka_errors("topic creation", settings):
        raise kerrors.KafkaTimeoutError(
            "Unable to bootstrap from ['10.0.0.7:9093', '10.0.0.8:9093']"
        )
    assert str(caught.value) == (
        "topic creation: no Kafka broker answered at 10.0.0.7:9093,10.0.0.8:9093 (PLAINTEXT); "
        "check KAFKA_BOOTSTRAP_SERVERS"
    )


def test_other_kafka_errors_keep_their_class_name_once() -> None:
    with (
        pytest.raises(BrokerError, match=r"^produce: \[Error 10\] MessageSizeTooLargeError: big$"),
        map_kafka_errors("produce", CommonSettings()),
    ):
        raise kerrors.MessageSizeTooLargeError("big")


PROBE = """
import json, time
from consumer import kafka
from consumer.errors import BrokerError
from consumer.settings import CommonSettings
settings = CommonSettings(kafka_bootstrap_servers="127.0.0.1:1")
started = time.monotonic()
try:
    kafka.reader(settings, bootstrap_timeout_ms=300)
except BrokerError as exc:
    print(json.dumps({"error": str(exc), "seconds": time.monotonic() - started}))
"""


def test_a_real_client_on_a_closed_port_gives_that_error() -> None:
    # in a child process: kafka-python leaves its I/O thread running after a failed constructor
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    result = json.loads(out.stdout)
    assert result["error"] == (
        "reader: no Kafka broker answered at 127.0.0.1:1 (PLAINTEXT); check KAFKA_BOOTSTRAP_SERVERS"
    )
    assert result["seconds"] < 10


def _inside_kafka_boundary(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call)
            and getattr(item.context_expr.func, "id", None) == "map_kafka_errors"
            for item in node.items
        ):
            return True
    return False


def test_every_kafka_client_of_the_commands_is_created_inside_the_boundary() -> None:
    outside = []
    for package in COMMAND_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            parents = {
                child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
            }
            outside += [
                f"{path.relative_to(ROOT)}:{node.lineno}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in CLIENTS
                and not _inside_kafka_boundary(node, parents)
            ]
    assert not outside, f"Kafka clients created outside map_kafka_errors: {outside}"


def test_a_missing_tls_file_is_a_config_error_before_any_connection(tmp_path: Path) -> None:
    settings = CommonSettings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "ca.pem")
    )
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CAFILE=.*ca\.pem: no such file$"):
        client_config(settings)


def test_an_unreachable_redis_names_redis_url() -> None:
    settings = CommonSettings(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.5)
    client = store.connect(settings)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            Registry(client, "test:").list()
    finally:
        client.close()
    message = str(caught.value)
    assert message.startswith("registry list: Redis unavailable: ")
    assert "127.0.0.1:1" in message and message.endswith("(check REDIS_URL)")
    assert "\n" not in message
