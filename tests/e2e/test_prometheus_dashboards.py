"""Every dashboard query and alert signal returns data from a real Prometheus scraping real
processes.

A real ``prometheus`` (Debian's /usr/bin/prometheus) scrapes ``allocator consume`` every second
while it allocates real CFPB complaints (with malformed records, so the DLQ has reasons) under a
shadow strategy set through ``allocator models`` / ``allocator strategy`` (so model info and shadow
agreement exist); the champion's manifest records validation figures (so the expected ratios
exist). The promoter and the explainer are started too when their commands exist; the queries
that need a process that is not there are reported as skipped, by name.

Static scrape labels ``namespace`` and ``pod`` stand in for what the ServiceMonitor adds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest.importorskip(
    "grafana_foundation_sdk", reason="pip install -e '.[dev]' (grafana-foundation-sdk)"
)

from dashboards import queries
from dashboards.generate import metric_names
from tests.flow import Feeder, mixed_inputs, real_complaints, topic_env
from tests.procs import Proc, read_all, wait_count
from tests.tiny_packages import with_validation_figures

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")
SCRAPE_S = 1
COMPLAINTS = 600
FEED_RATE = 40.0  # per second: ~15 s of load, so rates and quantiles have many samples
TOKEN = "e2e-explainer-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics_by_process() -> dict[str, set[str]]:
    from prometheus_client import CollectorRegistry

    from consumer.metrics import ConsumerMetrics, ExplainerMetrics, PromoterMetrics

    out = {}
    for name, cls in (
        ("consumer", ConsumerMetrics),
        ("promoter", PromoterMetrics),
        ("explainer", ExplainerMetrics),
    ):
        registry = CollectorRegistry()
        cls(registry)
        out[name] = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    return out


def _has_command(*args: str) -> bool:
    """True when ``allocator <args> --help`` exists (the promoter and explainer may come later)."""
    result = subprocess.run(
        [sys.executable, "-m", "allocator", *args, "--help"], capture_output=True, timeout=60
    )
    return result.returncode == 0


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "allocator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"allocator {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


class Prometheus:
    """A throwaway Prometheus on a free loopback port, scraping the given targets every second."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = _free_port()
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "scrape_configs": [
                {
                    "job_name": name,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {"namespace": "e2e", "pod": f"{name}-0"},
                        }
                    ],
                }
                for name, port in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = (workdir / "prometheus.log").open("wb")
        assert PROMETHEUS is not None
        self.p = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(workdir)

    def _wait_ready(self, workdir: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(
                    f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def query(self, expr: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def targets_up(self) -> dict[str, float]:
        return {str(r["metric"]["job"]): float(r["value"][1]) for r in self.query("up")}  # type: ignore[index]

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        self.log.close()


@dataclass
class Run:
    """What the scenario observed: series per query, and which processes ran."""

    series: dict[str, int] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    reviewed: bool = False  # some allocation needed human review (depends on the model's scores)


def _explain_once(port: int, decision_id: str) -> None:
    """One authorised and one unauthorised request; the explainer's paths are its own, so try the
    likely."""
    for path in (f"/explanations/{decision_id}", f"/explain/{decision_id}"):
        for token in (TOKEN, "wrong"):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}?task=team",
                headers={"Authorization": f"Bearer {token}"},
            )
            with contextlib.suppress(
                OSError
            ):  # 4xx/5xx still count in allocator_explanations_total
                urllib.request.urlopen(req, timeout=60).close()


def _feedback(bootstrap: str, topic: str, allocations: list[dict[str, object]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i, a in enumerate(allocations):
            doc = {
                "schema": "feedback/v1",
                "complaint_id": a["complaint_id"],
                "decision_id": a["decision_id"],
                # every third decision overturned by people, so accuracy is not trivially 1
                "team": a["team"] if i % 3 else "Other team",
                "issue": a["issue"],
                "vulnerable": a["vulnerable"],
                "decided_at": datetime.now(UTC).isoformat(),
            }
            producer.send(
                topic, key=str(a["complaint_id"]).encode(), value=json.dumps(doc).encode()
            )
        producer.flush()
    finally:
        producer.close()


@pytest.fixture(scope="module")
def run(
    kafka_bootstrap: str,
    redis_url: str,
    tiny_model: Path,
    tiny_model2: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary (apt-get install prometheus)")
    work = tmp_path_factory.mktemp("prometheus-e2e")
    unique = uuid.uuid4().hex[:10]
    env = topic_env(unique, kafka_bootstrap, redis_url)
    result = Run()

    # Strategy through the CLI an operator would use: champion, then a shadow challenger.
    figures = with_validation_figures(tiny_model, work / "champion")
    champion = _cli(env, "models", "register", str(figures)).split()[0]
    challenger = _cli(env, "models", "register", str(tiny_model2)).split()[0]
    _cli(env, "strategy", "champion", champion, "--reason", "e2e")
    _cli(env, "strategy", "shadow", challenger, "--sample", "1.0", "--reason", "e2e")

    procs: list[Proc] = []
    prometheus: Prometheus | None = None
    try:
        consumer = Proc(["consume"], env, work / "consumer.log")
        procs.append(consumer)
        targets = {"consumer": int(consumer.wait_log("consuming")["metrics_port"])}
        result.ran.add("consumer")
        promoter = explainer = None
        if _has_command("promoter"):
            promoter = Proc(["promoter"], env, work / "promoter.log")
            procs.append(promoter)
        else:
            result.notes.append("promoter: `allocator promoter` does not exist yet")
        if _has_command("explain", "serve"):
            explain_port = _free_port()
            explainer = Proc(
                ["explain", "serve"],
                {
                    **env,
                    "ALLOCATOR_EXPLAINER_TOKEN": TOKEN,
                    "ALLOCATOR_EXPLAINER_PORT": str(explain_port),
                },
                work / "explainer.log",
            )
            procs.append(explainer)
        else:
            result.notes.append("explainer: `allocator explain serve` does not exist yet")
        # The other processes' metrics ports come from their first log line naming one.
        for name, proc in (("promoter", promoter), ("explainer", explainer)):
            if proc is None:
                continue
            port = _wait_metrics_port(proc)
            if port:
                targets[name] = port
            else:
                result.notes.append(f"{name} logged no metrics_port; not scraped")

        prometheus = Prometheus(work, targets)
        docs = real_complaints(COMPLAINTS)
        inputs = list(mixed_inputs(docs))
        feeder = Feeder(kafka_bootstrap, env["ALLOCATOR_TOPIC_COMPLAINTS"], inputs, rate=FEED_RATE)
        feeder.start()
        feeder.join(120)
        counts = wait_count(
            kafka_bootstrap,
            [env["ALLOCATOR_TOPIC_ALLOCATIONS"], env["ALLOCATOR_TOPIC_DLQ"]],
            len(inputs),
            timeout=120,
        )
        assert sum(counts.values()) >= len(inputs), counts
        allocations = [
            json.loads(r.value)
            for r in read_all(kafka_bootstrap, env["ALLOCATOR_TOPIC_ALLOCATIONS"])
        ]
        result.reviewed = any(a.get("needs_review") for a in allocations)
        if promoter is not None:
            _feedback(kafka_bootstrap, env["ALLOCATOR_TOPIC_FEEDBACK"], allocations[:200])
        if explainer is not None:
            _explain_once(explain_port, str(allocations[0]["decision_id"]))
        time.sleep(10 * SCRAPE_S)  # let every counter change land in a few scrapes
        up = prometheus.targets_up()
        result.ran |= {job for job, value in up.items() if value == 1}
        for where, expr in queries():
            result.series[where] = len(prometheus.query(expr))
        yield result
    finally:
        if prometheus is not None:
            prometheus.stop()
        for p in procs:
            p.stop()
        _delete_topics(kafka_bootstrap, env)


def _wait_metrics_port(proc: Proc, timeout: float = 60) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.lines():
            if line.get("metrics_port"):
                return int(line["metrics_port"])
        if proc.p.poll() is not None:
            return None
        time.sleep(0.2)
    return None


def _delete_topics(bootstrap: str, env: dict[str, str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topics = [
            v
            for k, v in env.items()
            if k.startswith("ALLOCATOR_TOPIC_") and k != "ALLOCATOR_TOPIC_PARTITIONS"
        ]
        admin.delete_topics(topics)
    except Exception:  # cleanup only; the broker is throwaway in CI
        pass
    finally:
        admin.close()


METRICS = _metrics_by_process()
NEEDS = {  # what must run (or be set up) for a metric to have series
    "allocator_shadow_agreement_total": "consumer",
    **{m: "promoter" for m in METRICS["promoter"]},
    **{m: "explainer" for m in METRICS["explainer"]},
}
# Metrics defined in consumer/metrics.py that no code observes yet: their queries are expected
# empty. Like a strict xfail: once one starts returning data, this test fails until it leaves the
# list.
NOT_YET_OBSERVED: dict[str, str] = {}  # metrics known not to be recorded yet (none)


def _needs(expr: str) -> set[str]:
    return {NEEDS.get(m, "consumer") for m in metric_names(expr)}


@pytest.mark.parametrize("process", ["consumer", "promoter", "explainer"])
def test_queries_return_data(run: Run, process: str) -> None:
    mine = [(where, expr) for where, expr in queries() if process in _needs(expr)]
    checkable = [(w, e) for w, e in mine if _needs(e) <= run.ran]
    unchecked = sorted(w for w, e in mine if (w, e) not in checkable)
    gaps = {w for w, e in checkable if metric_names(e) & NOT_YET_OBSERVED.keys()}
    if not run.reviewed:  # a model sure of every answer routes nothing to review
        gaps |= {w for w, e in checkable if "allocator_needs_review_total" in metric_names(e)}
    empty = [w for w, _ in checkable if run.series[w] == 0 and w not in gaps]
    assert not empty, f"queries with no data from a busy {process}: {empty}"
    fixed = [w for w in gaps if run.series[w] > 0 and "allocator_needs_review_total" not in w]
    assert not fixed, f"now observed, remove from NOT_YET_OBSERVED: {fixed}"
    if unchecked:
        why = "; ".join(n for n in run.notes if process in n)
        pytest.skip(f"{process} did not run ({why}); unchecked: {unchecked}")
