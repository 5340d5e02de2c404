"""The explainer's HTTP API on the standard library's ``ThreadingHTTPServer`` (no web framework in
the image).

Routes (``explainer.openapi`` describes them):
- ``GET /v1/decisions/{decision_id}/explanation?task=&label=&format=json|html``   bearer token
- ``POST /v1/explanations[?format=json|html]`` with ``{"allocation": {...}, "text"?, "task"?,
  "label"?}``  bearer
- ``GET /healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``: no token (probes and Prometheus).
Auth: ``Authorization: Bearer <token>``, compared in constant time; 401 otherwise. Every ``/v1``
request writes one audit log line (logger ``explainer.audit``): who (a fingerprint of the presented
token, never the token), route, decision id, task, label, format, status, error code, cache hit,
duration. Never the complaint text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.errors import AllocationError
from consumer.metrics import ExplainerMetrics
from explainer import html as html_page
from explainer import openapi
from explainer.errors import BadRequestError, http_error
from explainer.service import ExplainService, parse_allocation

audit = logging.getLogger("explainer.audit")
log = logging.getLogger(__name__)

DECISION_PATH = re.compile(r"^/v1/decisions/(?P<id>[^/]+)/explanation$")
DECISION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_BODY_BYTES = (
    2 * 1024 * 1024
)  # an allocation record plus a 100,000-character text fits with room
Check = Callable[[], tuple[bool, str]]


def fingerprint(token: str | None) -> str:
    """Who made a request, for the audit log: a short hash of the presented token, never the
    token."""
    return "anonymous" if not token else "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ExplainerServer:
    """Serves ``service`` on ``host:port`` (0: any free port, see ``.port``) in daemon threads."""

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
        if not token:
            raise AllocationError("the explainer needs a bearer token (ALLOCATOR_EXPLAINER_TOKEN)")
        spec = json.dumps(openapi.document()).encode()
        # compare digests: constant time, and the token's length does not leak either
        expected = _digest(token)

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a client that stops sending mid-request does not hold a thread for good
            server_version = "complaints-allocation-explainer"

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, why = (live if path == "/healthz" else ready)()
                    self._send(200 if ok else 503, why.encode(), "text/plain; charset=utf-8")
                elif path == "/openapi.json":
                    self._send(200, spec, "application/json")
                else:
                    self._api("GET", path)

            def do_POST(self) -> None:
                self._api("POST", urlsplit(self.path).path)

            def _api(self, method: str, path: str) -> None:
                started = time.monotonic()
                m = DECISION_PATH.match(path)
                route = (
                    "/v1/decisions/{id}/explanation"
                    if m and method == "GET"
                    else "/v1/explanations"
                    if path == "/v1/explanations" and method == "POST"
                    else None
                )
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                fields: dict[str, Any] = {
                    "method": method,
                    "route": route or "unknown",
                    # the decision asked for, even when the request is then refused (a safe-looking
                    # id only)
                    "decision_id": m["id"] if m and DECISION_ID.match(m["id"]) else None,
                    "task": query.get("task"),
                    "label": query.get("label"),
                    "cache": None,
                }
                presented = self._bearer()
                fields["who"] = fingerprint(presented)
                status, code = 200, None
                try:
                    if presented is None or not hmac.compare_digest(_digest(presented), expected):
                        status, code = 401, "unauthorized"
                        self._drain()
                        self._error(
                            401,
                            code,
                            "missing or wrong bearer token",
                            {"WWW-Authenticate": "Bearer"},
                        )
                    elif route is None:
                        status, code = 404, "not_found"
                        self._drain()
                        self._error(404, code, f"no route {method} {path}")
                    else:
                        raw = self._read_body() if method == "POST" else b""
                        body, ctype, fields["cache"] = self._explain(m, query, raw, fields)
                        self._send(200, body, ctype)
                except AllocationError as exc:
                    status, code = http_error(exc)
                    extra = (
                        {"Retry-After": str(max(1, round(service.limits.budget_s)))}
                        if status == 429
                        else {}
                    )
                    self._error(status, code, str(exc), extra)
                except (
                    Exception
                ):  # a bug: 500 without details to the client, the traceback to our log
                    status, code = 500, "internal"
                    log.exception("explanation failed", extra={"route": route})
                    self._error(500, code, "internal error (logged)")
                finally:
                    metrics.requests.labels(status=str(status)).inc()
                    fields |= {
                        "status": status,
                        "error": code,
                        "duration_ms": round(1000 * (time.monotonic() - started), 1),
                    }
                    audit.info("explanation request", extra=fields)

            def _explain(
                self,
                m: re.Match[str] | None,
                query: dict[str, str],
                raw: bytes,
                fields: dict[str, Any],
            ) -> tuple[bytes, str, str]:
                fmt = query.get("format", "json")
                if fmt not in ("json", "html"):
                    raise BadRequestError(f"format must be json or html, not {fmt!r}")
                fields["format"] = fmt
                text = None
                if m is not None:
                    decision_id = m["id"]
                    if not DECISION_ID.match(decision_id):
                        raise BadRequestError("malformed decision id")
                    fields["decision_id"] = decision_id
                    allocation = service.find(decision_id)
                    task, label = query.get("task"), query.get("label")
                else:
                    req = self._json_body(raw)
                    allocation = parse_allocation(req.get("allocation"))
                    fields["decision_id"] = allocation.decision_id
                    text, task, label = req.get("text"), req.get("task"), req.get("label")
                    fields |= {"task": task, "label": label}
                doc, hit = service.explain(allocation, task, label, text)
                fields["task"], fields["label"] = doc["task"], doc["label"]
                cache = "hit" if hit else "miss"
                if fmt == "html":
                    return html_page.render(doc).encode(), "text/html; charset=utf-8", cache
                return json.dumps(doc).encode(), "application/json", cache

            def _drain(self) -> None:
                """Read an unwanted body: closing a socket with unread data resets it before the
                client reads."""
                length = self.headers.get("Content-Length") or "0"
                if length.isdigit() and int(length) <= MAX_BODY_BYTES:
                    self.rfile.read(int(length))

            def _read_body(self) -> bytes:
                try:
                    length = int(self.headers.get("Content-Length") or "0")
                except ValueError as exc:
                    raise BadRequestError("bad Content-Length") from exc
                if not 0 < length <= MAX_BODY_BYTES:
                    raise BadRequestError(f"body must be 1..{MAX_BODY_BYTES} bytes of JSON")
                return self.rfile.read(length)

            @staticmethod
            def _json_body(raw: bytes) -> dict[str, Any]:
                try:
                    req = json.loads(raw)
                except ValueError as exc:
                    raise BadRequestError(f"body is not JSON: {exc}") from exc
                allowed = {"allocation", "text", "task", "label"}
                if not isinstance(req, dict) or not set(req) <= allowed or "allocation" not in req:
                    raise BadRequestError(
                        f"body must be an object with allocation and optionally {allowed}"
                    )
                for key in ("text", "task", "label"):
                    if req.get(key) is not None and not isinstance(req[key], str):
                        raise BadRequestError(f"{key} must be a string")
                return req

            def _bearer(self) -> str | None:
                auth = self.headers.get("Authorization") or ""
                scheme, _, value = auth.partition(" ")
                return value.strip() if scheme.lower() == "bearer" and value.strip() else None

            def _error(
                self, status: int, code: str, message: str, headers: dict[str, str] | None = None
            ) -> None:
                body = json.dumps({"error": code, "message": message}).encode()
                self._send(status, body, "application/json", headers)

            def _send(
                self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")  # explanations quote complaint text
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # the audit line replaces the access log
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="explainer-http", daemon=True
        )

    def start(self) -> ExplainerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
