"""Bare onnxruntime vs end-to-end throughput, side by side in one run, on the same model and real
CFPB texts.

    python -m bench.throughput [--package DIR] [--messages 1500] [--latency-seconds 30]

1. bare: tokenise + onnxruntime in this process, in micro-batches like the consumer's (texts/s),
   measured before and after the e2e run; the faster of the two is the reference.
2. e2e saturation: the messages are produced first, then ``allocator consume`` (a subprocess,
   exactly-once on) drains them; throughput counts allocations committed after the first batch, over
   their time span.
3. latency: complaints produced at half the e2e rate; for each, the time from send to its committed
   allocation being read (read_committed), p50 and p99.
The last line is one JSON object: bare_per_s, e2e_per_s, ratio, p50_ms, p99_ms and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from bench.common import cfpb_texts, minilm_package, stack_env
from consumer.inference import OnnxModel, TextEncoder, cpu_limit
from consumer.package import load_package


def bare(package_dir: str, texts: list[str], batch: int, sub_batch: int) -> float:
    package = load_package(package_dir)
    encoder, model = TextEncoder(package), OnnxModel(package, cpu_limit(), sub_batch)
    model.run(encoder.encode(texts[:64]))  # warm-up: kernels, allocator, CPU frequency
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.run(encoder.encode(texts[i : i + batch]))
    return len(texts) / (time.perf_counter() - start)


class Reader(threading.Thread):
    """Reads committed allocations; records when each complaint id's allocation became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self.allocated_at: dict[str, float] = {}
        self.stop = threading.Event()
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            group_id=None,
        )

    def run(self) -> None:
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                now = time.time()
                for r in records:
                    doc = json.loads(r.value)
                    self.seen.setdefault(doc["complaint_id"], now)
                    self.allocated_at[doc["complaint_id"]] = datetime.fromisoformat(
                        doc["allocated_at"]
                    ).timestamp()
        self.consumer.close()

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.seen) < n and time.time() < deadline:
            time.sleep(0.1)
        if len(self.seen) < n:
            raise SystemExit(f"only {len(self.seen)} of {n} allocations arrived within {timeout}s")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--package", help="model package (default: trained default, else untrained MiniLM)"
    )
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument(
        "--batch", type=int, default=64, help="micro-batch (ALLOCATOR_BATCH_MAX_MESSAGES)"
    )
    ap.add_argument(
        "--sub-batch", type=int, default=int(os.environ.get("ALLOCATOR_MAX_SUB_BATCH", "1"))
    )
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    return ap.parse_args()


def _consumer_env(
    args: argparse.Namespace, package: str, env: dict[str, str], run: str
) -> dict[str, str]:
    """``allocator consume``'s environment: the stack, topics and keys of this run only."""
    return {
        **os.environ,
        **env,
        "ALLOCATOR_TOPIC_COMPLAINTS": f"bench-in-{run}",
        "ALLOCATOR_TOPIC_ALLOCATIONS": f"bench-out-{run}",
        "ALLOCATOR_TOPIC_SHADOW": f"bench-shadow-{run}",
        "ALLOCATOR_TOPIC_DLQ": f"bench-dlq-{run}",
        "ALLOCATOR_MODEL_DIR": package,
        "ALLOCATOR_REDIS_PREFIX": f"bench-{run}:",
        "ALLOCATOR_CONSUMER_GROUP": f"bench-{run}",
        "ALLOCATOR_TOPIC_PARTITIONS": str(args.partitions),
        "ALLOCATOR_METRICS_PORT": "0",
        "ALLOCATOR_BATCH_MAX_MESSAGES": str(args.batch),
        "ALLOCATOR_MAX_SUB_BATCH": str(args.sub_batch),
        "ALLOCATOR_LOG_LEVEL": "WARNING",
    }


class Feed:
    """Sends complaint/v1 documents to the input topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")

    def send(self, cid: str, text: str) -> None:
        doc = {"schema": "complaint/v1", "complaint_id": cid, "text": text}
        self.producer.send(self.topic, key=cid.encode(), value=json.dumps(doc).encode())

    def at_rate(self, rows: list[tuple[str, str]], rate: float, n: int) -> dict[str, float]:
        """Send ``n`` messages at ``rate`` per second; returns when each key was sent."""
        sent: dict[str, float] = {}
        start = time.time()
        for i in range(n):
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            cid, text = rows[i % len(rows)]
            key = f"lat-{i}-{cid}"
            sent[key] = time.time()
            self.send(key, text)
        self.producer.flush()
        return sent


def _saturation_rate(reader: Reader, n: int, timeout: float) -> float:
    """Messages per second over the pre-loaded backlog, from the first committed batch on."""
    reader.wait_for(n, timeout=timeout)
    stamps = sorted(reader.allocated_at.values())
    first = stamps[0]
    later = [s for s in stamps if s > first + 1e-3]  # after the first committed batch
    return len(later) / (later[-1] - first)


def _e2e(
    args: argparse.Namespace, package: str, rows: list[tuple[str, str]], bare_per_s: float
) -> tuple[float, float, np.ndarray]:
    """(saturated msg/s, the half rate used, latencies in ms at that rate), exactly-once on."""
    env = stack_env()
    cenv = _consumer_env(args, package, env, uuid.uuid4().hex[:8])
    subprocess.run(
        [sys.executable, "-m", "allocator", "topics", "create"],
        env=cenv,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    feed = Feed(env["KAFKA_BOOTSTRAP_SERVERS"], cenv["ALLOCATOR_TOPIC_COMPLAINTS"])
    for i, (cid, text) in enumerate(rows):
        feed.send(f"sat-{i}-{cid}", text)
    feed.producer.flush()
    reader = Reader(env["KAFKA_BOOTSTRAP_SERVERS"], cenv["ALLOCATOR_TOPIC_ALLOCATIONS"])
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "allocator", "consume"], env=cenv)
    try:
        timeout = 30 + 3 * len(rows) / max(1.0, bare_per_s) + 60
        e2e_per_s = _saturation_rate(reader, len(rows), timeout)
        rate = e2e_per_s / 2
        sent = feed.at_rate(rows, rate, int(rate * args.latency_seconds))
        reader.wait_for(len(rows) + len(sent), timeout=60)
        lat = np.array([(reader.seen[k] - t0) * 1000 for k, t0 in sent.items()])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.stop.set()
        reader.join()
        feed.producer.close()
    return e2e_per_s, rate, lat


def main() -> None:
    args = _args()
    package = str(minilm_package(args.package))
    rows = cfpb_texts(args.messages)
    texts = [t for _, t in rows]
    bare_before = bare(package, texts, args.batch, args.sub_batch)
    print(f"bare onnxruntime: {bare_before:.1f} texts/s", file=sys.stderr)
    e2e_per_s, rate, lat = _e2e(args, package, rows, bare_before)
    # bare again after the e2e run, and the faster of the two is the reference: CPU speed drifts on
    # shared machines, and the ratio must not flatter the pipeline
    bare_after = bare(package, texts, args.batch, args.sub_batch)
    bare_per_s = max(bare_before, bare_after)
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    ratio = e2e_per_s / bare_per_s
    print(f"\n{'measure':32} {'value':>10}")
    print(f"{'bare onnxruntime before (texts/s)':32} {bare_before:10.1f}")
    print(f"{'bare onnxruntime after (texts/s)':32} {bare_after:10.1f}")
    print(f"{'end-to-end exactly-once (msg/s)':32} {e2e_per_s:10.1f}")
    print(f"{'ratio e2e/bare':32} {ratio:10.3f}")
    print(f"{'latency p50 at half rate (ms)':32} {p50:10.1f}")
    print(f"{'latency p99 at half rate (ms)':32} {p99:10.1f}")
    summary = {
        "bare_per_s": round(bare_per_s, 2),
        "e2e_per_s": round(e2e_per_s, 2),
        "ratio": round(ratio, 4),
        "bare_before_per_s": round(bare_before, 2),
        "bare_after_per_s": round(bare_after, 2),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "latency_rate_per_s": round(rate, 2),
        "messages": len(rows),
        "batch": args.batch,
        "sub_batch": args.sub_batch,
        "partitions": args.partitions,
        "cpus": cpu_limit(),
        "package": package,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
