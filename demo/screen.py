"""The live one-screen summary: scraped from the processes' own ``/metrics``, as Prometheus
would, except the latency: exact quantiles of what the demo measured itself (``demo.traffic``), for
the phase now running."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return []
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def _ready(port: int) -> bool:
    """``/readyz`` answers 200: the pod has its plan and serves."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:  # HTTPError (503: not ready) included
        return False


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == x for k, x in match.items())
    )


@dataclass
class Screen:
    consumer_ports: list[int]
    promoter_port: int | None
    explainer_url: str | None = None
    # (p50, p99, samples) of the end-to-end latency measured in the current phase
    latency: Callable[[], tuple[float | None, float | None, int]] | None = None
    last: tuple[float, float] = (0.0, 0.0)
    lines: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        consumers: Samples = [s for p in self.consumer_ports for s in scrape(p)]
        promoter = scrape(self.promoter_port) if self.promoter_port else []
        now, done = time.monotonic(), total(consumers, "allocator_allocations_total")
        rate = (done - self.last[1]) / (now - self.last[0]) if self.last[0] else 0.0
        self.last = (now, done)
        p50, p99, measured = self.latency() if self.latency else (None, None, 0)
        served = sorted(
            {
                (lb["task"], lb["arm"], lb["model_version"])
                for n, lb, v in consumers
                if n == "allocator_model_info" and v == 1
            }
        )
        agree = total(consumers, "allocator_shadow_agreement_total", agree="true")
        shadowed = agree + total(consumers, "allocator_shadow_agreement_total", agree="false")
        versions = (v for n, _, v in consumers if n == "allocator_strategy_version")
        strategy_version = int(max(versions, default=0))
        reasons = ", ".join(
            f"{r} {int(total(consumers, 'allocator_dlq_total', reason=r))}"
            for r in sorted(
                {lb["reason"] for n, lb, v in consumers if n == "allocator_dlq_total" and v}
            )
        )
        breaker = total(consumers, "allocator_circuit_breaker_open")
        out = [
            f"complaints/s {rate:6.1f}   allocated {int(done):6d}"
            f"   DLQ {int(total(consumers, 'allocator_dlq_total')):4d}"
            + (f" ({reasons})" if reasons else "")
            + f"   lag {int(total(consumers, 'allocator_consumer_lag_messages')):5d}"
            f"   latency p50 {_ms(p50)} p99 {_ms(p99)} (n={measured}, this phase)"
            + (f"   CIRCUIT BREAKER OPEN on {int(breaker)} pod(s)" if breaker else ""),
            f"strategy v{strategy_version}: " + ", ".join(f"{t}:{a}={m}" for t, a, m in served),
        ]
        if shadowed:
            out.append(
                f"shadow agreement {agree / shadowed:6.1%} of {int(shadowed)} task predictions"
            )
        acc = sorted(
            (lb["task"], lb["model_version"], lb["arm"], v)
            for n, lb, v in promoter
            if n == "allocator_live_accuracy_ratio"
        )
        if acc:
            out.append("live accuracy: " + "  ".join(f"{t}/{m}/{a} {v:.1%}" for t, m, a, v in acc))
        joined = total(promoter, "allocator_feedback_total", outcome="joined")
        if promoter:
            out.append(f"feedback joined {int(joined)}")
        if self.explainer_url:
            out.append(
                f"metrics: http://127.0.0.1:{self.consumer_ports[0]}/metrics   explainer: "
                f"{self.explainer_url}"
            )
        self.lines = out
        return out

    def strategy_versions(self) -> list[int]:
        """The strategy version each consumer serves now (0: not reachable)."""
        return [
            int(total(scrape(port), "allocator_strategy_version")) for port in self.consumer_ports
        ]

    def wait_for_consumers(self, partitions: int, timeout: float = 120) -> None:
        """Until every consumer is ready (its plan loaded) and owns some of the ``partitions``, so
        that the first phase measures a running pipeline, not the consumers' start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = [scrape(port) for port in self.consumer_ports]
            owned = [total(s, "allocator_assigned_partitions") for s in pods]
            ready = all(_ready(port) for port in self.consumer_ports)
            if ready and all(owned) and sum(owned) == partitions:
                return
            print(f"demo: waiting for the consumers (partitions owned: {owned})", flush=True)
            time.sleep(1)
        print("demo: the consumers are not all serving yet; going on", file=sys.stderr)

    def show(self, phase: str) -> None:
        lines = [f"== {phase}", *self.render()]
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[2J\x1b[H" + "\n".join(lines) + "\n")
        else:
            print(" | ".join(lines))
        sys.stdout.flush()


def _ms(seconds: float | None) -> str:
    return "   -  " if seconds is None else f"{seconds * 1000:5.0f}ms"
