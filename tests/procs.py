"""Run ``allocator`` processes in tests: real subprocesses with their own env, logs and metrics
port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer


class Proc:
    """A running ``python -m allocator <args>``; its JSON log lines go to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "allocator", *args],
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def wait_log(self, msg: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.lines():
                if line.get("msg") == msg:
                    return line
            if self.p.poll() is not None:
                raise AssertionError(
                    f"process exited {self.p.returncode}: {self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"no {msg!r} log line within {timeout}s: {self.log.read_text()[-3000:]}"
        )

    def metrics(self) -> str:
        port = self.wait_log("consuming")["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def signal(self, sig: signal.Signals) -> None:
        self.p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        finally:
            self._out.close()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._out.close()


def run_cli(
    env: dict[str, str], *argv: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m allocator ARGV`` to its end, with ``env`` over the environment; output
    captured."""
    return subprocess.run(
        [sys.executable, "-m", "allocator", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_all(bootstrap: str, topic: str, idle_ms: int = 3000) -> list[Any]:
    """Every committed record of ``topic`` (read_committed), until the topic is idle for
    ``idle_ms``."""
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=idle_ms,
    )
    try:
        return list(c)
    finally:
        c.close()


def wait_count(bootstrap: str, topics: Iterable[str], want: int, timeout: float) -> dict[str, int]:
    """Poll committed record counts of ``topics`` until their sum reaches ``want`` (or time runs
    out)."""
    deadline = time.time() + timeout
    counts: dict[str, int] = {}
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        group_id=None,
    )
    try:
        c.subscribe(list(topics))
        counts = dict.fromkeys(topics, 0)
        while sum(counts.values()) < want and time.time() < deadline:
            for tp, records in c.poll(timeout_ms=500).items():
                counts[tp.topic] += len(records)
        return counts
    finally:
        c.close()
