"""``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness) on their own port, in a daemon
thread. A port that cannot be bound (two processes on one host) is a ``ConfigError`` naming the
setting, from ``bind_error``, which the explainer's own port uses too."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.errors import ConfigError

# A loop iteration (poll, score, commit) takes seconds at most; one that has not come round in two
# minutes is stuck (e.g. kafka-python waiting without a deadline on a broker that is gone), and the
# kubelet restarts it.
STALL_S = 120.0


def bind_error(exc: OSError, host: str, port: int, setting: str) -> ConfigError:
    """The one-line error of a listening socket that could not be bound to ``host:port``."""
    if exc.errno == errno.EADDRINUSE:
        why = f"port {port} is in use (another process on this host?)"
    else:
        why = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return ConfigError(f"{why}; set {setting} to a free port (0 = any free port)")


def heartbeat(
    last_beat: Callable[[], float], stall_s: float = STALL_S
) -> Callable[[], tuple[bool, str]]:
    """A liveness check of a poll loop: alive while ``last_beat()`` (a ``time.monotonic()`` reading)
    is less than ``stall_s`` old."""

    def live() -> tuple[bool, str]:
        stalled = time.monotonic() - last_beat()
        return stalled < stall_s, f"loop last beat {stalled:.1f}s ago"

    return live


class HealthServer:
    """Serves the registry's metrics; ``live`` and ``ready`` are callables returning (ok,
    reason)."""

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        live: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",
    ) -> None:
        checks = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok, why = checks[path]()
                    self._send(200 if ok else 503, why.encode(), "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(
                self, *args: object
            ) -> None:  # probes every few seconds: not worth a log line
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise bind_error(exc, host, port, "ALLOCATOR_METRICS_PORT") from exc
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
