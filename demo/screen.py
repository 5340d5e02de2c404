"""The live one-screen summary: scraped from the processes' own ``/metrics``, as Prometheus
would."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections import defaultdict
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


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == x for k, x in match.items())
    )


def quantile(samples: Samples, name: str, q: float) -> float | None:
    """Quantile of a histogram summed over processes, since the processes started: the first bucket
    bound that holds ``q`` of the samples (an upper bound; histogram_quantile would interpolate
    inside it)."""
    buckets: dict[float, float] = defaultdict(float)
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            buckets[float(labels["le"])] += v
    if not buckets or max(buckets.values()) == 0:
        return None
    bounds = sorted(buckets)
    want = q * buckets[bounds[-1]]
    return next(b for b in bounds if buckets[b] >= want)


@dataclass
class Screen:
    consumer_ports: list[int]
    promoter_port: int | None
    explainer_url: str | None = None
    last: tuple[float, float] = (0.0, 0.0)
    lines: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        consumers: Samples = [s for p in self.consumer_ports for s in scrape(p)]
        promoter = scrape(self.promoter_port) if self.promoter_port else []
        now, done = time.monotonic(), total(consumers, "allocator_allocations_total")
        rate = (done - self.last[1]) / (now - self.last[0]) if self.last[0] else 0.0
        self.last = (now, done)
        p50 = quantile(consumers, "allocator_end_to_end_latency_seconds", 0.5)
        p99 = quantile(consumers, "allocator_end_to_end_latency_seconds", 0.99)
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
        out = [
            f"complaints/s {rate:6.1f}   allocated {int(done):6d}"
            f"   DLQ {int(total(consumers, 'allocator_dlq_total')):4d}"
            f"   lag {int(total(consumers, 'allocator_consumer_lag_messages')):5d}"
            f"   latency p50 {_ms(p50)} p99 {_ms(p99)}",
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

    def show(self, phase: str) -> None:
        lines = [f"== {phase}", *self.render()]
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[2J\x1b[H" + "\n".join(lines) + "\n")
        else:
            print(" | ".join(lines))
        sys.stdout.flush()


def _ms(seconds: float | None) -> str:
    return "   -  " if seconds is None else f"{seconds * 1000:5.0f}ms"
