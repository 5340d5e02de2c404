"""The demo's background processes: started with their own env and log, listed in a pid file for
``--down``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(".stack") / "demo.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Starts ``python -m allocator ...`` children; stops them all on exit or Ctrl-C, and on
    ``--down``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "allocator", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, proc))
        self._save()
        return proc

    def stop(self, name: str | None = None, timeout: float = 15) -> None:
        for child_name, proc in list(self.children):
            if name is None or child_name == name:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.children.remove((child_name, proc))
        self._save()

    def _save(self) -> None:
        STATE.parent.mkdir(exist_ok=True)
        STATE.write_text(json.dumps({n: p.pid for n, p in self.children}))


def down() -> int:
    """Stop processes a previous demo left (after a crash or a closed terminal)."""
    if not STATE.is_file():
        print("demo: nothing running")
        return 0
    pids = json.loads(STATE.read_text())
    for name, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"consumer" in cmdline:  # a reused pid is not ours
            os.kill(pid, signal.SIGTERM)
            print(f"demo: stopped {name} (pid {pid})")
    time.sleep(1)
    STATE.unlink()
    return 0
