"""The audit line of every API request, and the API's last boundary, as one pure ASGI middleware.

``AuditMiddleware`` wraps every request but the open ``GET``s (``OPEN_PATHS``: probes, metrics,
the OpenAPI document). It starts the request's line from what the request says (``who``: the
token's fingerprint; ``method``; ``task`` and ``label`` of the query), lets the route, its
dependencies and the error handlers of ``explainer.api`` fill in the rest through ``line(request)``
(``route``, ``decision_id``, ``format``, ``cache``, ``error``), and once the response has gone out
writes one line to the logger ``explainer.audit`` with the ``status`` and ``duration_ms``, and
counts the status in ``allocator_explanations_total``. Nothing writes the complaint text into a
line. An exception that escapes the app (a bug) becomes 500 ``internal`` here, its traceback in
the log. Every response, open or not, gets ``Cache-Control: no-store`` (explanations quote
complaint text) and its header names in their conventional spelling.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer.metrics import ExplainerMetrics
from explainer.auth import fingerprint, presented
from explainer.errors import error_body

audit = logging.getLogger("explainer.audit")  # audit lines only: readers select them by logger
log = logging.getLogger("explainer.api")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_KEY = "explainer.audit"  # where a request's line lives in its ASGI scope
_SPELLINGS = {b"www-authenticate": b"WWW-Authenticate", b"etag": b"ETag"}


def line(request: HTTPConnection) -> dict[str, Any]:
    """The audit fields of ``request`` (a throwaway dict for requests that are not audited)."""
    fields: dict[str, Any] = request.scope.get(_KEY, {})
    return fields


class AuditMiddleware:
    def __init__(self, app: ASGIApp, metrics: ExplainerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"cache-control", b"no-store")]
                message["headers"] = [(_spelled(k), v) for k, v in headers]
            await send(message)

        if scope["method"] == "GET" and scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, headed)
        else:
            await self._audited(scope, receive, headed)

    async def _audited(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        # the last value of a repeated parameter, blank ones dropped, as the routes read them
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": "unknown",
            "decision_id": None,
            "task": query.get("task"),
            "label": query.get("label"),
            "cache": None,
            "who": fingerprint(presented(Headers(scope=scope))),
            "error": None,
        }
        scope[_KEY] = fields
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:  # a bug: 500 without details to the client, the traceback to our log
            log.exception("explanation failed", extra={"route": fields["route"]})
            fields["error"] = "internal"
            if not status:
                status = 500
                await _send_internal(send)
        finally:
            self.metrics.requests.labels(status=str(status)).inc()
            fields |= {
                "status": status,
                "duration_ms": round(1000 * (time.monotonic() - started), 1),
            }
            audit.info("explanation request", extra=fields)


def _spelled(name: bytes) -> bytes:
    """A header name in its conventional spelling (``WWW-Authenticate``, ``Content-Type``). Names
    are case-insensitive, but clients of this API have read them so spelled, and Starlette
    lowercases them (h11 writes them as given)."""
    return _SPELLINGS.get(name.lower()) or b"-".join(p.capitalize() for p in name.split(b"-"))


async def _send_internal(send: Send) -> None:
    body = error_body("internal", "internal error (logged)")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
