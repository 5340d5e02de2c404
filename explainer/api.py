"""The explainer's HTTP API as a FastAPI application (``create_app``; ``explainer.http`` serves it).

Routes (the OpenAPI document at ``/openapi.json`` is generated from them and ``explainer.openapi``):
- ``GET /v1/decisions/{decision_id}/explanation?task=&label=&format=json|html``   bearer token
- ``POST /v1/explanations[?format=json|html]`` with ``{"allocation": {...}, "text"?, "task"?,
  "label"?}``  bearer
- ``GET /healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``: no token (probes and Prometheus).

Order of checks on a ``/v1`` request, each refusal an ``AllocationError`` that one handler maps
(``explainer.errors.http_error``) to its status and ``{"error": code, "message": ...}``:
1. the route, else 404 ``not_found``; but a missing or wrong token is 401 first, as on every route,
   so that an unauthenticated caller learns nothing of the routes;
2. the bearer token (``explainer.auth``, a security dependency): 401 ``unauthorized``;
3. ``format``, then the POST body (``read_body``: at most ``MAX_BODY_BYTES``, JSON, an
   ``ExplainRequest``), then the decision id: 400 ``bad_request`` (FastAPI's 422 for a parameter
   becomes 400 too);
4. the service (``explainer.service``), in FastAPI's thread pool: the explain endpoints are plain
   ``def``, since SHAP, Kafka reads and page rendering block.
Probes, metrics, auth and body reading are ``async``: cheap, and the probes must answer while
every pool thread explains. ``explainer.audit`` writes the audit line of every request but the
open ones; each route's first dependency names it there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BeforeValidator, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from consumer import __version__
from consumer.contracts.messages import Allocation
from consumer.errors import AllocationError
from consumer.metrics import ExplainerMetrics
from explainer import html as html_page
from explainer import openapi
from explainer.audit import AuditMiddleware, line
from explainer.auth import BearerAuth, presented
from explainer.errors import (
    BadRequestError,
    RouteNotFoundError,
    UnauthorizedError,
    error_body,
    http_error,
)
from explainer.service import ExplainService, parse_allocation

DECISION_ID = r"^[A-Za-z0-9._-]{1,128}$"
MAX_BODY_BYTES = 2 * 1024 * 1024  # an allocation record plus a 100,000-character text fits
BODY_TIMEOUT_S = 30.0  # a client that stops sending mid-body does not hold its request for good
ROUTE_BY_ID = "/v1/decisions/{id}/explanation"  # the audit line's route names
ROUTE_BY_RECORD = "/v1/explanations"
Check = Callable[[], tuple[bool, str]]
_SAFE_ID = re.compile(DECISION_ID)

DecisionId = Annotated[str, Path(pattern=DECISION_ID)]
Task = Annotated[str | None, Query(description="Task to explain (default: team).")]
Label = Annotated[str | None, Query(description="Label to explain (default: the decided one).")]
# a blank ?format= means the default, as a blank task or label does
Format = Annotated[
    Literal["json", "html"], BeforeValidator(lambda v: v or "json"), Query(alias="format")
]


class ExplainerApi(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's generated document with what it cannot generate (``openapi.complete``)."""
        if self.openapi_schema is None:
            self.openapi_schema = openapi.complete(super().openapi())
        return self.openapi_schema


def create_app(
    service: ExplainService,
    token: str,
    metrics: ExplainerMetrics,
    registry: CollectorRegistry,
    live: Check,
    ready: Check,
) -> FastAPI:
    """The API over ``service``, guarded by ``token`` (``AllocationError`` if empty); ``live`` and
    ``ready`` answer the probes, ``registry`` holds what ``/metrics`` exports."""
    auth = BearerAuth(token)
    app = ExplainerApi(
        title=openapi.TITLE,
        version=__version__,
        description=openapi.DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN; the document is enough
        redoc_url=None,
    )
    _open_routes(app, registry, live, ready)
    _explain_routes(app, service, auth)
    _error_handlers(app, auth, retry_after=str(max(1, round(service.limits.budget_s))))
    app.add_middleware(AuditMiddleware, metrics=metrics)
    return app


def _open_routes(app: FastAPI, registry: CollectorRegistry, live: Check, ready: Check) -> None:
    plain: dict[int | str, dict[str, Any]] = {503: {"description": "Not (yet) so, and why."}}

    @app.get("/healthz", response_class=PlainTextResponse, responses=plain, summary="Liveness.")
    async def healthz() -> Response:
        ok, why = live()
        return PlainTextResponse(why, 200 if ok else 503)

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        responses=plain,
        summary="Readiness: the index has caught up and shap is warm.",
    )
    async def readyz() -> Response:
        ok, why = ready()
        return PlainTextResponse(why, 200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics.")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _explain_routes(app: FastAPI, service: ExplainService, auth: BearerAuth) -> None:
    explanation: dict[str, Any] = {
        "response_model": openapi.Explanation,
        "responses": openapi.responses(),
    }

    @app.get(
        "/v1/decisions/{decision_id}/explanation",
        dependencies=[Depends(_audited_as(ROUTE_BY_ID)), Security(auth)],
        summary="Explain a decision by id (found through the allocations index).",
        **explanation,
    )
    def by_id(
        request: Request,
        fmt: Annotated[str, Depends(response_format)],
        decision_id: DecisionId,
        task: Task = None,
        label: Label = None,
    ) -> Response:
        allocation = service.find(decision_id)
        return _explained(service, line(request), allocation, task, label, None, fmt)

    @app.post(
        "/v1/explanations",
        dependencies=[Depends(_audited_as(ROUTE_BY_RECORD)), Security(auth)],
        summary="Explain the decision in an allocation record (text optional).",
        openapi_extra=openapi.REQUEST_BODY,
        **explanation,
    )
    def by_record(
        request: Request,
        fmt: Annotated[str, Depends(response_format)],  # before the body, which may be refused
        body: Annotated[openapi.ExplainRequest, Depends(read_body)],
    ) -> Response:
        fields = line(request)
        allocation = parse_allocation(body.allocation)
        fields |= {"decision_id": allocation.decision_id, "task": body.task, "label": body.label}
        return _explained(service, fields, allocation, body.task, body.label, body.text, fmt)


def _explained(
    service: ExplainService,
    fields: dict[str, Any],
    allocation: Allocation,
    task: str | None,
    label: str | None,
    text: str | None,
    fmt: str,
) -> Response:
    doc, hit = service.explain(allocation, task, label, text)
    fields |= {"task": doc["task"], "label": doc["label"], "cache": "hit" if hit else "miss"}
    if fmt == "html":
        return Response(html_page.render(doc), media_type="text/html; charset=utf-8")
    return Response(json.dumps(doc), media_type="application/json")


def _audited_as(route: str) -> Callable[[Request], Awaitable[None]]:
    """A route's first dependency: its name and decision id in the audit line, so that even a
    refused request (no token, bad query) says what it asked for."""

    async def name(request: Request) -> None:
        line(request)["route"] = route
        _note_decision_id(request)

    return name


def _note_decision_id(request: Request) -> None:
    decision_id = request.path_params.get("decision_id")
    if isinstance(decision_id, str) and _SAFE_ID.match(decision_id):  # safe to log only
        line(request)["decision_id"] = decision_id


async def response_format(request: Request, fmt: Format = "json") -> str:
    """The ``format`` query parameter, valid, and recorded in the audit line."""
    line(request)["format"] = fmt
    return fmt


async def read_body(request: Request) -> openapi.ExplainRequest:
    """The POST body as an ``ExplainRequest`` (``BadRequestError`` if it is not one): at most
    ``MAX_BODY_BYTES`` by ``Content-Length``, read within ``BODY_TIMEOUT_S``. Read here rather
    than by FastAPI, which refuses a JSON body unless it is labelled ``application/json``: clients
    need not label it (``curl -d`` and urllib say form-urlencoded)."""
    try:
        length = int(request.headers.get("content-length") or "0")
    except ValueError as exc:
        raise BadRequestError("bad Content-Length") from exc
    if not 0 < length <= MAX_BODY_BYTES:
        raise BadRequestError(f"body must be 1..{MAX_BODY_BYTES} bytes of JSON")
    try:
        with anyio.fail_after(BODY_TIMEOUT_S):
            raw = await request.body()
    except TimeoutError as exc:
        raise BadRequestError(f"body not received within {BODY_TIMEOUT_S:g} s") from exc
    except ClientDisconnect as exc:
        raise BadRequestError("client went away while sending the body") from exc
    return await run_in_threadpool(_parse_body, raw)  # parsing 2 MB takes a while


def _parse_body(raw: bytes) -> openapi.ExplainRequest:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"body is not JSON: {exc}") from exc
    try:
        return openapi.ExplainRequest.model_validate(doc)
    except ValidationError as exc:
        raise BadRequestError(
            "body must be an object with allocation and optionally text, task, label (strings): "
            + _problems(exc.errors())
        ) from exc


def _problems(errors: Any) -> str:
    # location and message only: pydantic's "input" would echo the request, complaint text and all
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:3])


def _error_handlers(app: FastAPI, auth: BearerAuth, retry_after: str) -> None:
    async def refused(request: Request, exc: Exception) -> Response:
        status, code = http_error(exc)
        headers = (
            {"WWW-Authenticate": "Bearer"}
            if status == 401
            else {"Retry-After": retry_after}
            if status == 429
            else None
        )
        line(request)["error"] = code
        return Response(error_body(code, str(exc)), status, headers, "application/json")

    async def invalid(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return await refused(request, BadRequestError(_problems(errors)))

    async def no_route(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code not in (404, 405):  # not raised by any route of this app
            return await http_exception_handler(request, exc)
        _note_decision_id(request)  # a wrong method on a route still names the decision
        if not auth.accepts(presented(request.headers)):
            return await refused(request, UnauthorizedError("missing or wrong bearer token"))
        return await refused(
            request, RouteNotFoundError(f"no route {request.method} {request.url.path}")
        )

    app.add_exception_handler(AllocationError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, no_route)
