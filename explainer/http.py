"""Serves the explainer's API (``explainer.api``, FastAPI) with uvicorn in a background thread.

The socket is bound on construction (port 0: any free port, ``.port`` is the bound one), so that a
port in use fails at once (a ``ConfigError`` naming ``ALLOCATOR_EXPLAINER_PORT``) and the port is
known before ``start``. uvicorn runs with its own event loop in the thread ``explainer-http``: h11,
no lifespan, no access log (the audit line of ``explainer.audit`` is the only request log, and it
never holds complaint text), no log configuration of its own (the process's JSON logging stays).
``stop`` lets requests in flight finish within the explanation budget plus a margin, which the
chart's termination grace period covers.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from prometheus_client import CollectorRegistry

from consumer.errors import ConfigError
from consumer.health import bind_error
from consumer.metrics import ExplainerMetrics
from explainer.api import create_app
from explainer.auth import fingerprint
from explainer.service import ExplainService

__all__ = ["ExplainerServer", "fingerprint"]

SERVER = "complaints-allocation-explainer"
START_TIMEOUT_S = 10.0
Check = Callable[[], tuple[bool, str]]


class ExplainerServer:
    """Serves ``service`` on ``host:port``; ``start`` returns once it accepts requests."""

    def __init__(
        self,
        service: ExplainService,
        token: str,
        metrics: ExplainerMetrics,
        registry: CollectorRegistry,
        live: Check,
        ready: Check,
        port: int,
        host: str = "0.0.0.0",
    ) -> None:
        app = create_app(service, token, metrics, registry, live, ready)
        try:
            self._socket = socket.create_server((host, port))
        except OSError as exc:
            raise bind_error(exc, host, port, "ALLOCATOR_EXPLAINER_PORT") from exc
        self.port: int = self._socket.getsockname()[1]
        # an explanation in flight may take its whole budget; waiting longer only delays the exit
        self.grace_s = math.ceil(service.limits.budget_s) + 5
        config = uvicorn.Config(
            app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_config=None,
            proxy_headers=False,  # no address is used; nothing to take from a proxy
            server_header=False,
            headers=[("server", SERVER)],
            timeout_graceful_shutdown=self.grace_s,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="explainer-http",
            daemon=True,
        )

    def start(self) -> ExplainerServer:
        """Start serving; ``ConfigError`` if uvicorn does not come up within
        ``START_TIMEOUT_S``."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the explainer's HTTP server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (at most ``grace_s``), close the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=self.grace_s + 5)
        self._socket.close()
