"""scripts/stack.sh: `up` is idempotent, `down` stops exactly what `up` started and leaves nothing
behind.

Runs a second stack in a temporary STACK_DIR on free ports, so a stack in use is not disturbed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stack.sh"


def stack(
    state: Path, command: str, check: bool = True, path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``stack.sh command`` on free ports; ``path``: a folder put first on PATH (shims)."""
    env = {**os.environ, "STACK_DIR": str(state), "STACK_KAFKA_PORT": "0", "STACK_REDIS_PORT": "0"}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    # 300 s: a cold run resolves the Kafka jars with Maven first.
    done = subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, f"stack.sh {command} failed:\n{done.stdout}\n{done.stderr}"
    return done


def processes_under(state: Path) -> list[int]:
    """Pids of live processes whose command line mentions the state dir (the broker's does)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state) in (proc / "cmdline").read_text():
                found.append(int(proc.name))
        except OSError:  # exited while we looked
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return "zombie" not in (Path("/proc") / str(pid) / "status").read_text().lower()
    except OSError:
        return False


def test_up_twice_then_down_leaves_nothing_behind(tmp_path: Path):
    state = tmp_path / "stack"
    try:
        stack(state, "up")
        env = dict(line.split("=", 1) for line in (state / "env").read_text().split())
        pids = {name: int((state / f"{name}.pid").read_text()) for name in ("kafka", "redis")}

        admin = KafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
        try:
            admin.list_topics()
        finally:
            admin.close()
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            assert client.ping()
        finally:
            client.close()

        again = stack(state, "up")
        assert "already running" in again.stdout
        assert {name: int((state / f"{name}.pid").read_text()) for name in pids} == pids
        assert stack(state, "status").returncode == 0

        stack(state, "down")
        assert not [pid for pid in pids.values() if alive(pid)]
        assert processes_under(state) == []
        assert not list(state.glob("*.pid"))
        assert stack(state, "status", check=False).returncode == 1
    finally:
        stack(state, "down", check=False)


def test_down_ignores_a_pidfile_that_names_someone_else(tmp_path: Path):
    """A stale pidfile whose pid now belongs to another process: that process must survive
    `down`."""
    state = tmp_path / "stack"
    state.mkdir()
    (state / "kafka.pid").write_text(f"{os.getpid()}\n")  # this pytest process: alive, not a broker
    (state / "redis.pid").write_text("999999999\n")  # no such process
    done = stack(state, "down")
    assert "stale kafka pidfile" in done.stderr
    assert "stale redis pidfile" in done.stderr
    assert not list(state.glob("*.pid"))


# Stands in for setsid: it renames itself and waits before it execs the real one, which is what
# every fork looks like for an instant, stretched to seconds.
SLOW_SETSID = """#!/usr/bin/perl
$0 = "not-yet-exec";
sleep 2;
exec { "REAL" } "REAL", @ARGV or die "exec REAL: $!";
"""


@pytest.mark.skipif(not shutil.which("perl"), reason="the shim is a perl script")
def test_up_waits_for_a_server_that_has_not_exec_ed_yet(tmp_path: Path):
    """Between fork and exec a server's command line is still the script's. `up` must wait for it,
    not call it exited: in CI that race made `up` fail with an empty redis log and leave the redis
    it started running."""
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("setsid")
    assert real is not None
    (shim / "setsid").write_text(SLOW_SETSID.replace("REAL", real), encoding="utf-8")
    (shim / "setsid").chmod(0o755)
    state = tmp_path / "stack"
    try:
        stack(state, "up", path=shim)
        env = dict(line.split("=", 1) for line in (state / "env").read_text().split())
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            assert client.ping()
        finally:
            client.close()
        pids = [int((state / f"{name}.pid").read_text()) for name in ("kafka", "redis")]
        stack(state, "down")
        assert not [pid for pid in pids if alive(pid)]
    finally:
        stack(state, "down", check=False)
