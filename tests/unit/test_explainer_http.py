"""The HTTP API over an in-memory world: auth, routes, statuses, the OpenAPI description, audit
lines, metrics."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from consumer.contracts.messages import Allocation
from consumer.errors import ConfigError
from consumer.metrics import ExplainerMetrics
from explainer import openapi
from explainer.http import ExplainerServer, fingerprint
from explainer.limits import Slots
from explainer.service import Limits
from explainer.testing import MemoryWorld

TOKEN = "test-token-0123456789"
TEXT = (
    "The debt collector keeps calling me at work about a debt I do not owe, "
    "and threatened to sue me."
)


class Api:
    def __init__(self, world: MemoryWorld, server: ExplainerServer) -> None:
        self.world = world
        self.server = server
        self.allocation = world.decide(TEXT)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.server.port}{path}", data=data, method=method
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def explanation(self, query: str = "", **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return self.call(
            "GET", f"/v1/decisions/{self.allocation.decision_id}/explanation{query}", **kw
        )


@pytest.fixture(scope="module")
def api(tiny: Path) -> Iterator[Api]:
    registry = CollectorRegistry()
    metrics = ExplainerMetrics(registry)
    world = MemoryWorld(
        tiny, metrics=metrics, limits=Limits(max_evals=80, budget_s=60, concurrency=1, cache_size=8)
    )
    server = ExplainerServer(
        world.service,
        TOKEN,
        metrics,
        registry,
        lambda: (True, "alive"),
        lambda: (True, "ready"),
        0,
        "127.0.0.1",
    ).start()
    try:
        yield Api(world, server)
    finally:
        server.stop()


def _post_body(allocation: Allocation, **extra: Any) -> dict[str, Any]:
    return {"allocation": json.loads(allocation.model_dump_json(by_alias=True)), **extra}


def test_no_or_wrong_token_is_401(api: Api) -> None:
    for token in (None, "wrong", TOKEN + "x", ""):
        status, headers, body = api.explanation(token=token)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer", token
        assert json.loads(body)["error"] == "unauthorized"
    status, _, _ = api.call("POST", "/v1/explanations", _post_body(api.allocation), token=None)
    assert status == 401


def test_json_explanation_matches_the_openapi_schema(api: Api) -> None:
    status, headers, body = api.explanation("?task=team")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    doc = json.loads(body)
    Draft202012Validator(openapi.EXPLANATION).validate(doc)
    assert doc["decision_id"] == api.allocation.decision_id and doc["additivity"]["ok"]


def test_html_explanation_highlights_tokens(api: Api) -> None:
    status, headers, body = api.explanation("?format=html&task=vulnerable")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'id="highlighted"' in page and '<span class="t ' in page and "vulnerable" in page


def test_post_with_allocation_and_text(api: Api) -> None:
    status, _, body = api.call(
        "POST", "/v1/explanations", _post_body(api.allocation, text=TEXT, task="issue")
    )
    doc = json.loads(body)
    assert status == 200 and doc["text_from"] == "request" and doc["task"] == "issue"
    status, _, body = api.call(
        "POST", "/v1/explanations?format=html", _post_body(api.allocation, task="issue")
    )
    assert status == 200 and body.startswith(b"<!doctype html>")


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "status", "code"),
    [
        ("GET", "/v1/decisions/{id}/explanation?format=pdf", None, None, 400, "bad_request"),
        ("GET", "/v1/decisions/{id}/explanation?task=colour", None, None, 400, "bad_request"),
        ("GET", "/v1/decisions/{id}/explanation?label=astronauts", None, None, 400, "bad_request"),
        ("GET", "/v1/decisions/no%20such/explanation", None, None, 400, "bad_request"),
        (
            "GET",
            "/v1/decisions/" + "f" * 32 + "/explanation",
            None,
            None,
            404,
            "decision_not_found",
        ),
        ("GET", "/v1/nothing", None, None, 404, "not_found"),
        ("POST", "/v1/explanations", None, b"{not json", 400, "bad_request"),
        (
            "POST",
            "/v1/explanations",
            {"allocation": {"schema": "allocation/v1"}},
            None,
            400,
            "bad_request",
        ),
        ("POST", "/v1/explanations", {"record": {}}, None, 400, "bad_request"),
        ("POST", "/v1/explanations", "tampered", None, 409, "input_mismatch"),
        ("POST", "/v1/explanations", "other-digest", None, 409, "model_digest_mismatch"),
        ("POST", "/v1/explanations", "unregistered", None, 424, "model_not_registered"),
    ],
)
def test_errors_have_their_status_and_code(
    api: Api, method: str, path: str, body: Any, raw: bytes | None, status: int, code: str
) -> None:
    a = api.allocation
    pred = a.predictions["team"]
    if body == "tampered":
        body = _post_body(a, text=TEXT.replace("sue", "see"))
    elif body in ("other-digest", "unregistered"):
        model = pred.model.model_copy(
            update={"sha256": "b" * 64}
            if body == "other-digest"
            else {"version": "never-registered"}
        )
        body = _post_body(
            a.model_copy(update={"predictions": {"team": pred.model_copy(update={"model": model})}})
        )
    got, _, payload = api.call(method, path.replace("{id}", a.decision_id), body, raw=raw)
    assert (got, json.loads(payload)["error"]) == (status, code), payload


def test_busy_slots_give_429_with_retry_after(api: Api) -> None:
    service = api.world.service
    saved = service.slots
    service.slots = Slots(1, wait_s=0.1)
    try:
        with service.slots.hold():
            status, headers, body = api.call(
                "POST", "/v1/explanations", _post_body(api.allocation, task="issue", label="Other")
            )
    finally:
        service.slots = saved
    assert (
        status == 429 and json.loads(body)["error"] == "busy" and int(headers["Retry-After"]) >= 1
    )


def test_budget_exceeded_is_504(tiny: Path) -> None:
    registry = CollectorRegistry()
    world = MemoryWorld(
        tiny, limits=Limits(max_evals=500, budget_s=1e-9, concurrency=1, cache_size=0)
    )
    metrics = ExplainerMetrics(registry)
    server = ExplainerServer(
        world.service,
        TOKEN,
        metrics,
        registry,
        lambda: (True, ""),
        lambda: (True, ""),
        0,
        "127.0.0.1",
    ).start()
    try:
        status, _, body = Api(world, server).explanation()
    finally:
        server.stop()
    assert status == 504 and json.loads(body)["error"] == "budget_exceeded"


def test_probes_metrics_and_openapi_need_no_token(api: Api) -> None:
    for path, want in (("/healthz", b"alive"), ("/readyz", b"ready")):
        status, _, body = api.call("GET", path, token=None)
        assert (status, body) == (200, want)
    api.explanation(token=None)
    status, _, body = api.call("GET", "/metrics", token=None)
    assert status == 200 and b'allocator_explanations_total{status="401"}' in body
    status, _, body = api.call("GET", "/openapi.json", token=None)
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert {
        "/v1/decisions/{decision_id}/explanation",
        "/v1/explanations",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    _assert_refs_resolve(spec, spec)


def _assert_refs_resolve(node: Any, root: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        for v in node.values():
            _assert_refs_resolve(v, root)
    elif isinstance(node, list):
        for v in node:
            _assert_refs_resolve(v, root)


def test_every_request_writes_one_audit_line_without_the_text(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="explainer.audit"):
        api.explanation("?task=team")
        api.explanation(token="wrong")
        deadline = (
            time.monotonic() + 5
        )  # the server thread writes the line after the response has gone out
        while (
            len([r for r in caplog.records if r.name == "explainer.audit"]) < 2
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
    lines = [r for r in caplog.records if r.name == "explainer.audit"]
    assert len(lines) == 2
    ok, denied = (vars(r) for r in lines)
    assert ok["who"] == fingerprint(TOKEN) and TOKEN not in json.dumps(ok, default=str)
    assert (ok["status"], ok["decision_id"], ok["task"], ok["route"]) == (
        200,
        api.allocation.decision_id,
        "team",
        "/v1/decisions/{id}/explanation",
    )
    assert ok["cache"] in ("hit", "miss") and ok["duration_ms"] >= 0
    assert (denied["status"], denied["error"], denied["who"]) == (
        401,
        "unauthorized",
        fingerprint("wrong"),
    )
    for line in lines:
        flat = json.dumps(vars(line), default=str)
        assert "debt collector" not in flat and "threatened" not in flat


def test_a_busy_port_is_a_config_error_naming_the_setting(tiny: Path) -> None:
    registry = CollectorRegistry()
    world = MemoryWorld(tiny, limits=Limits(max_evals=80, budget_s=1, concurrency=1, cache_size=0))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"^port {port} is in use .*ALLOCATOR_EXPLAINER_PORT"
        ):
            ExplainerServer(
                world.service,
                TOKEN,
                ExplainerMetrics(registry),
                registry,
                lambda: (True, ""),
                lambda: (True, ""),
                port,
                "127.0.0.1",
            )
