"""Issue 6, done-when: explain decisions made by a real ``allocator consume`` on real complaints,
over the real HTTP API (``python -m explainer serve``): SHAP values reproduce the model output,
refusals have their statuses, the one-shot CLI finds a decision by id, and the HTML page renders
with its highlights in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from consumer.registry import Registry
from explainer.html import PALETTE
from tests.flow import real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-" + "x" * 20
N = 8
USED = (0, 1, 2)  # decisions the tests explain, besides the 410 test's victim
TOLERANCE = 1e-4  # probability units, for additivity and for reproducing the recorded score
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@dataclass
class Flow:
    env: dict[str, str]
    docs: dict[str, dict[str, Any]]  # complaint id -> complaint
    allocations: list[dict[str, Any]]
    port: int
    log: Path
    tmp: Path

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def explain(
        self, allocation: dict[str, Any], query: str = "", token: str | None = TOKEN
    ) -> tuple[int, bytes]:
        status, _, body = self.call(
            "GET", f"/v1/decisions/{allocation['decision_id']}/explanation{query}", token=token
        )
        return status, body


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "explainer", "serve"],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    deadline = time.monotonic() + 90
    port = None
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and json.loads(line).get("msg") == "explainer serving":
                port = json.loads(line)["port"]
        if port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return proc, port
            except urllib.error.URLError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"explainer not ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def flow(
    kafka_bootstrap: str, redis_url: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flow]:
    unique = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("explainer-e2e")
    env = {**topic_env(unique, kafka_bootstrap, redis_url), "ALLOCATOR_MODEL_DIR": str(tiny_model)}
    client = redis.Redis.from_url(redis_url)
    Registry(client, env["ALLOCATOR_REDIS_PREFIX"]).register(str(tiny_model))
    consumer = Proc(["consume"], env, tmp / "consumer.log")
    explainer: subprocess.Popen[bytes] | None = None
    try:
        consumer.wait_log("consuming")
        docs = {d["complaint_id"]: d for d in real_complaints(N)}
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for d in docs.values():
            producer.send(
                env["ALLOCATOR_TOPIC_COMPLAINTS"],
                key=d["complaint_id"].encode(),
                value=json.dumps(d).encode(),
            )
        producer.flush()
        producer.close()
        assert (
            wait_count(kafka_bootstrap, [env["ALLOCATOR_TOPIC_ALLOCATIONS"]], N, timeout=120)[
                env["ALLOCATOR_TOPIC_ALLOCATIONS"]
            ]
            == N
        )
        allocations = [
            json.loads(r.value)
            for r in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
        ]
        explainer_env = {
            **env,
            "ALLOCATOR_EXPLAINER_TOKEN": TOKEN,
            "ALLOCATOR_EXPLAINER_PORT": "0",
            "ALLOCATOR_EXPLAINER_MAX_EVALS": "150",
            "ALLOCATOR_SECRETS_DIR": str(tmp / "no-secrets"),
        }
        explainer, port = _serve(explainer_env, tmp / "explainer.log")
        yield Flow(explainer_env, docs, allocations, port, tmp / "explainer.log", tmp)
    finally:
        if explainer is not None:
            explainer.terminate()
            explainer.wait(20)
        consumer.stop()
        keys = list(client.scan_iter(match=f"{env['ALLOCATOR_REDIS_PREFIX']}*"))
        if keys:
            client.delete(*keys)
        client.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.delete_topics(
            [
                v
                for k, v in env.items()
                if k.startswith("ALLOCATOR_TOPIC_") and "PARTITIONS" not in k
            ]
        )
        admin.close()


def test_explains_a_consumer_decision_and_reproduces_its_output(flow: Flow) -> None:
    allocation = flow.allocations[0]
    status, body = flow.explain(allocation, "?task=team")
    assert status == 200, body
    doc = json.loads(body)
    pred = allocation["predictions"]["team"]
    assert (doc["decision_id"], doc["label"], doc["text_from"]) == (
        allocation["decision_id"],
        pred["label"],
        "kafka",
    )
    assert (
        doc["model"]["sha256"] == pred["model"]["sha256"]
        and doc["strategy"] == allocation["strategy"]
    )
    assert abs(doc["base_value"] + sum(doc["values"]) - doc["output"]) <= TOLERANCE, (
        "SHAP values are additive"
    )
    assert abs(doc["output"] - pred["score"]) <= TOLERANCE, (
        "the explained output is the decision's score"
    )
    assert doc["text"] == flow.docs[allocation["complaint_id"]]["text"]
    for task in ("issue", "vulnerable"):
        status, body = flow.explain(allocation, f"?task={task}")
        other = json.loads(body)
        assert status == 200 and other["additivity"]["ok"] and other["reproduction"]["ok"], task


def test_without_the_token_is_401(flow: Flow) -> None:
    for token in (None, "not-the-token"):
        status, body = flow.explain(flow.allocations[0], token=token)
        assert status == 401 and json.loads(body)["error"] == "unauthorized"


def test_tampered_input_and_foreign_models_are_refused(flow: Flow) -> None:
    allocation = flow.allocations[1]
    text = flow.docs[allocation["complaint_id"]]["text"]
    status, _, body = flow.call(
        "POST", "/v1/explanations", {"allocation": allocation, "text": text + " (edited)"}
    )
    assert (status, json.loads(body)["error"]) == (409, "input_mismatch")
    status, _, body = flow.call(
        "POST", "/v1/explanations", {"allocation": allocation, "text": text, "task": "issue"}
    )
    assert status == 200 and json.loads(body)["text_from"] == "request"
    for change, want in (
        ({"sha256": "c" * 64}, (409, "model_digest_mismatch")),
        ({"version": "v-unregistered"}, (424, "model_not_registered")),
    ):
        forged = json.loads(json.dumps(allocation))
        forged["predictions"]["team"]["model"].update(change)
        status, _, body = flow.call("POST", "/v1/explanations", {"allocation": forged})
        assert (status, json.loads(body)["error"]) == want


def test_unknown_decision_is_404_and_input_gone_is_410(flow: Flow) -> None:
    status, _, body = flow.call("GET", f"/v1/decisions/{'0' * 32}/explanation")
    assert (status, json.loads(body)["error"]) == (404, "decision_not_found")
    # deleting below the victim's offset must not touch the decisions the other tests explain (0,
    # 1, 2)
    used = [flow.allocations[i]["source"] for i in USED]
    victims = [
        a
        for a in flow.allocations[len(USED) :]
        if all(
            u["partition"] != a["source"]["partition"] or u["offset"] > a["source"]["offset"]
            for u in used
        )
    ]
    if not victims:
        pytest.skip("every partition starts with a decision another test explains")
    victim = victims[0]
    src = victim["source"]
    admin = KafkaAdminClient(bootstrap_servers=flow.env["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        admin.delete_records({TopicPartition(src["topic"], src["partition"]): src["offset"] + 1})
    finally:
        admin.close()
    status, body = flow.explain(victim)
    assert (status, json.loads(body)["error"]) == (410, "input_gone")


def test_one_shot_cli_finds_the_decision_by_id(flow: Flow) -> None:
    allocation = flow.allocations[2]
    out = flow.tmp / "cli.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "explainer",
            allocation["decision_id"],
            "--task",
            "issue",
            "--json",
            str(out),
            "--html",
            str(flow.tmp / "cli.html"),
        ],
        env={**os.environ, **flow.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert (
        doc["decision_id"] == allocation["decision_id"]
        and doc["task"] == "issue"
        and doc["additivity"]["ok"]
    )
    assert "additivity error" in run.stderr


def test_metrics_cache_and_audit_lines(flow: Flow) -> None:
    allocation = flow.allocations[0]
    assert flow.explain(allocation, "?task=team")[0] == 200
    assert flow.explain(allocation, "?task=team")[0] == 200  # a cache hit at the latest
    assert flow.explain(allocation, token="nope")[0] == 401
    assert flow.call("GET", f"/v1/decisions/{'1' * 32}/explanation")[0] == 404
    _, _, metrics = flow.call("GET", "/metrics", token=None)
    text = metrics.decode()
    assert 'allocator_explanations_total{status="200"}' in text and 'status="401"' in text
    hits = [
        ln for ln in text.splitlines() if ln.startswith("allocator_explanation_cache_hits_total ")
    ]
    assert hits and float(hits[0].split()[1]) >= 1
    deadline = time.monotonic() + 5  # audit lines are written just after their responses
    while time.monotonic() < deadline:
        lines = [json.loads(ln) for ln in flow.log.read_text().splitlines() if ln.startswith("{")]
        audit = [ln for ln in lines if ln.get("logger") == "explainer.audit"]
        if {a["status"] for a in audit} >= {200, 401, 404}:
            break
        time.sleep(0.1)
    assert any(a["decision_id"] == allocation["decision_id"] and a["status"] == 200 for a in audit)
    assert {a["status"] for a in audit} >= {200, 401, 404}
    assert all(
        {"who", "route", "decision_id", "task", "status", "duration_ms"} <= set(a) for a in audit
    )
    words = [w for d in flow.docs.values() for w in d["text"].split() if len(w) > 12][:20]
    raw = flow.log.read_text()
    assert not any(w in raw for w in words), "no complaint text in the explainer's logs"


def test_html_renders_with_highlights_in_headless_chromium(flow: Flow) -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (set CHROMIUM)")
    status, body = flow.explain(flow.allocations[0], "?task=team&format=html")
    assert status == 200
    page, png = flow.tmp / "explanation.html", flow.tmp / "explanation.png"
    page.write_bytes(body)
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={flow.tmp / 'chromium'}",
            f"--screenshot={png}",
            "--window-size=1200,900",
            f"file://{page}",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = read_png(png).reshape(-1, 3)
    counts = {
        c: int(np.all(pixels == _rgb(c), axis=1).sum()) for cs in PALETTE.values() for c in cs
    }
    legend = 26 * 14  # each palette colour is one legend swatch, at most this many pixels
    highlighted = sum(max(0, n - legend) for n in counts.values())
    assert highlighted > 5000, f"too few highlighted pixels: {counts}"
    assert (
        sum(counts[c] > legend for c in PALETTE["p"]) >= 2
        or sum(counts[c] > legend for c in PALETTE["n"]) >= 2
    )


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def read_png(path: Path) -> np.ndarray:
    """RGB pixels ``[h, w, 3]`` of an 8-bit, non-interlaced RGB or RGBA PNG (no imaging library
    needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], (0, 0, 0, 0, 0, 0, 0)
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    w, h, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and interlace == 0, header
    ch = 3 if ctype == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), dtype=np.int64)
    prev = np.zeros(w * ch, dtype=np.int64)
    for y in range(h):
        f, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:  # Sub, Average, Paeth depend on the pixel to the left: one pixel at a time
            cur = np.zeros_like(line)
            for x in range(w * ch):
                a = int(cur[x - ch]) if x >= ch else 0
                b, c = int(prev[x]), int(prev[x - ch]) if x >= ch else 0
                if f == 1:
                    p = a
                elif f == 3:
                    p = (a + b) >> 1
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (int(line[x]) + p) & 255
        out[y], prev = cur, cur
    return out.reshape(h, w, ch)[:, :, :3]
