"""The demo's steps, each done with the same commands an operator would type (printed at the
end)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from demo.labels import feedback
from demo.procs import Processes, free_port
from demo.screen import Screen
from trainer.paths import DEFAULT_DATA as DATA

ROOT = Path(__file__).resolve().parents[1]
CACHE = (
    Path(os.environ.get("CA_CACHE_DIR", Path.home() / ".cache" / "complaints-allocation")) / "demo"
)


@dataclass
class Demo:
    """One run: its own topics and Redis prefix, so a re-run never sees an earlier run's data."""

    quick: bool
    messages: int
    rate: float
    env: dict[str, str]
    commands: list[str] = field(default_factory=list)
    allocations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def create(cls, quick: bool, messages: int, rate: float, stack: dict[str, str]) -> Demo:
        run = uuid.uuid4().hex[:6]
        env = {
            **stack,
            "ALLOCATOR_REDIS_PREFIX": f"demo:{run}:",
            "ALLOCATOR_TOPIC_PARTITIONS": "4",
            "ALLOCATOR_CONSUMER_GROUP": f"demo-{run}",
            "ALLOCATOR_PROMOTER_GROUP": f"demo-promoter-{run}",
            "ALLOCATOR_LOG_LEVEL": "WARNING",
        }
        for topic, name in (
            ("COMPLAINTS", "complaints"),
            ("ALLOCATIONS", "allocations"),
            ("SHADOW", "allocations.shadow"),
            ("DLQ", "complaints.dlq"),
            ("FEEDBACK", "complaints.feedback"),
        ):
            env[f"ALLOCATOR_TOPIC_{topic}"] = f"demo-{run}.{name}"
        return cls(quick, messages, rate, env)

    # ----
    # commands -------------------------------------------------------------------------------------
    def cli(self, *args: str, quiet: bool = False) -> str:
        """Run ``allocator ARGS`` as an operator would, record it, return its output."""
        self.commands.append("allocator " + shlex.join(args))
        done = subprocess.run(
            [sys.executable, "-m", "allocator", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"demo: `allocator {shlex.join(args)}` failed:\n{done.stderr[-2000:]}")
        if not quiet:
            print(f"$ allocator {shlex.join(args)}\n{done.stdout.strip()}")
        return done.stdout.strip()

    # ----
    # models ---------------------------------------------------------------------------------------
    def models(self) -> tuple[Path, Path]:
        """Champion and challenger packages, trained once and cached for the next run."""
        if self.quick:
            from trainer.tiny import build_tiny

            out = []
            for seed in (0, 1):
                folder = CACHE / f"tiny-s{seed}"
                if not (folder / "manifest.json").is_file():
                    build_tiny(folder, seed)
                out.append(folder)
            return out[0], out[1]
        return self._train("champion"), self._challenger()

    def _challenger(self) -> Path:
        # the full reference model (python -m bench.accuracy) when it is cached; else a bounded run
        # on more rows
        reference = CACHE.parent / "models" / "default"
        return reference if (reference / "manifest.json").is_file() else self._train("challenger")

    def _train(self, role: str) -> Path:
        out = CACHE / role
        package = out / "package"
        if (package / "manifest.json").is_file():
            print(f"demo: {role} model cached at {package}")
            return package
        cmd = [
            sys.executable,
            "-m",
            "trainer",
            "train",
            "--config",
            str(ROOT / "demo" / f"{role}.yaml"),
            "--data",
            str(DATA),
            "--out",
            str(out),
        ]
        self.commands.append(shlex.join(["python", *cmd[1:]]))
        print(f"demo: training the {role} (bounded run, cached afterwards): {shlex.join(cmd[1:])}")
        subprocess.run(
            cmd,
            check=True,
            env={**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")},
        )
        return package

    # ----
    # processes ------------------------------------------------------------------------------------
    def start(self, procs: Processes, token: str) -> Screen:
        ports = [free_port() for _ in range(4)]
        for i in range(2):
            procs.start(
                f"consumer-{i}", ["consume"], {**self.env, "ALLOCATOR_METRICS_PORT": str(ports[i])}
            )
        self.commands.append("allocator consume    # x2, each with its own ALLOCATOR_METRICS_PORT")
        procs.start(
            "promoter",
            ["promoter", "run"],
            {
                **self.env,
                "ALLOCATOR_METRICS_PORT": str(ports[2]),
                "ALLOCATOR_AUTO_APPLY": "true",
                "ALLOCATOR_PROMOTER_CANARY_WEIGHT": "0.2",
                "ALLOCATOR_MIN_LABELS": "30" if self.quick else "50",
            },
        )
        self.commands.append("ALLOCATOR_AUTO_APPLY=true allocator promoter run")
        explainer_port = free_port()
        procs.start(
            "explainer",
            ["explain", "serve"],
            {
                **self.env,
                "ALLOCATOR_METRICS_PORT": str(ports[3]),
                "ALLOCATOR_EXPLAINER_PORT": str(explainer_port),
                "ALLOCATOR_EXPLAINER_TOKEN": token,
            },
        )
        self.commands.append("ALLOCATOR_EXPLAINER_TOKEN=... allocator explain serve")
        return Screen(
            ports[:2], ports[2], f"http://127.0.0.1:{explainer_port}/v1/decisions/<id>/explanation"
        )

    # ---- traffic and the humans'
    # feedback -------------------------------------------------------------
    def stream(self, docs: list[dict[str, Any]], screen: Screen, phase: str) -> None:
        """Send ``docs`` at the demo rate and wait until each has its allocation, showing the live
        summary."""
        producer = KafkaProducer(
            bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=10
        )
        start, want = time.monotonic(), len(self.allocations) + len(docs)
        for i, doc in enumerate(docs):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(
                self.env["ALLOCATOR_TOPIC_COMPLAINTS"],
                key=doc["complaint_id"].encode(),
                value=json.dumps(doc).encode(),
            )
            if i % max(1, int(self.rate * 2)) == 0:
                screen.show(f"{phase}: sent {i}/{len(docs)}")
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 300
        while len(self.allocations) < want and time.monotonic() < deadline:
            screen.show(f"{phase}: waiting for {want - len(self.allocations)} allocations")
            time.sleep(2)

    def humans(self, stop: threading.Event) -> threading.Thread:
        """Reads committed allocations and answers each with the real CFPB labels as feedback."""

        def run() -> None:
            bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
            reader = KafkaConsumer(
                self.env["ALLOCATOR_TOPIC_ALLOCATIONS"],
                bootstrap_servers=bootstrap,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                group_id=None,
            )
            writer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
            try:
                while not stop.is_set():
                    for records in reader.poll(timeout_ms=300).values():
                        for r in records:
                            allocation = json.loads(r.value)
                            self.allocations.append(allocation)
                            fb = feedback(allocation)
                            if fb is not None:
                                writer.send(
                                    self.env["ALLOCATOR_TOPIC_FEEDBACK"],
                                    key=r.key,
                                    value=json.dumps(fb).encode(),
                                )
            finally:
                writer.close()
                reader.close()

        thread = threading.Thread(target=run, name="demo-humans", daemon=True)
        thread.start()
        return thread


def complaints(n: int, split: str = "test") -> Iterator[dict[str, Any]]:
    """Real CFPB complaints of ``split`` (never the holdout), as ``allocator produce`` sends
    them."""
    from consumer.produce import Report, csv_complaints

    for i, doc in enumerate(csv_complaints(DATA, Report(), split)):
        if i == n:
            return
        yield doc
