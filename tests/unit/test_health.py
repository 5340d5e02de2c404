"""The probe and metrics port of the consumer and the promoter: what the kubelet and Prometheus
read."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer.errors import ConfigError
from consumer.health import STALL_S, HealthServer, heartbeat


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, list[float], list[bool]]]:
    registry = CollectorRegistry()
    Counter("probe_test_records", "records seen", registry=registry).inc(3)
    beat, ready = [time.monotonic()], [False]
    health = HealthServer(
        0,
        registry,
        heartbeat(lambda: beat[0]),
        lambda: (ready[0], "serving" if ready[0] else "no model plan yet"),
        host="127.0.0.1",
    ).start()
    yield health, beat, ready
    health.stop()


def test_metrics_and_the_two_probes_answer_with_their_reasons(
    server: tuple[HealthServer, list[float], list[bool]],
) -> None:
    health, _, ready = server
    status, body = get(health.port, "/metrics")
    assert status == 200 and "probe_test_records_total 3.0" in body
    assert get(health.port, "/healthz")[0] == 200
    assert get(health.port, "/readyz") == (
        503,
        "no model plan yet",
    )  # not ready is not dead: no restart
    ready[0] = True
    assert get(health.port, "/readyz?verbose=1") == (
        200,
        "serving",
    )  # the query string is not the path
    assert get(health.port, "/other")[0] == 404


def test_a_loop_that_stopped_beating_fails_liveness(
    server: tuple[HealthServer, list[float], list[bool]],
) -> None:
    health, beat, _ = server
    status, body = get(health.port, "/healthz")
    assert status == 200 and body.startswith("loop last beat 0.")
    beat[0] = time.monotonic() - STALL_S - 1
    status, body = get(health.port, "/healthz")
    assert status == 503 and body.startswith(f"loop last beat {STALL_S + 1:.0f}.")


def test_heartbeat_takes_its_own_stall_limit() -> None:
    now = time.monotonic()
    assert heartbeat(lambda: now - 5, stall_s=10)()[0]
    assert not heartbeat(lambda: now - 5, stall_s=1)()[0]


def test_a_busy_port_is_a_config_error_naming_the_setting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:  # another process's metrics port
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            HealthServer(
                port, CollectorRegistry(), lambda: (True, ""), lambda: (True, ""), "127.0.0.1"
            )
    assert str(caught.value) == (
        f"port {port} is in use (another process on this host?); "
        "set ALLOCATOR_METRICS_PORT to a free port (0 = any free port)"
    )


def test_consume_reports_a_busy_port_before_it_connects_to_anything() -> None:
    from consumer.app import consume
    from consumer.settings import ConsumerSettings

    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        settings = ConsumerSettings(
            metrics_port=port,
            kafka_bootstrap_servers="127.0.0.1:9",  # nothing listens: connecting would take 30 s
            redis_url="redis://127.0.0.1:9/0",
        )
        started = time.monotonic()
        with pytest.raises(ConfigError, match="ALLOCATOR_METRICS_PORT"):
            consume(settings)
    assert time.monotonic() - started < 5
