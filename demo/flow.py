"""The demo's steps, each done with the same commands an operator would type (printed at the
end)."""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

from demo.procs import Processes, free_port
from demo.screen import Screen
from demo.traffic import Traffic
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
    traffic: Traffic = field(init=False)
    # the test split, then val: never a training row, never the holdout
    _source: Iterator[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.traffic = Traffic(self.env, self.rate)
        self._source = chain(complaints_of("test"), complaints_of("val"))

    @property
    def run(self) -> str:
        """This run's id (its topics, group and Redis prefix carry it)."""
        return self.env["ALLOCATOR_CONSUMER_GROUP"].removeprefix("demo-")

    @property
    def allocations(self) -> list[dict[str, Any]]:
        return self.traffic.allocations

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` complaints to send."""
        return list(islice(self._source, n))

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
            # every process and command applies the same decision policy (status re-evaluates)
            "ALLOCATOR_MIN_LABELS": "30" if quick else "50",
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

    def trainer(self, *args: str, log: Path) -> list[dict[str, Any]]:
        """Run ``python -m trainer ARGS`` with the demo's Redis and topics (its log to ``log``),
        record it, return the JSON lines it prints."""
        self.commands.append(shlex.join(["python", "-m", "trainer", *args]))
        print(f"$ python -m trainer {shlex.join(args)}    (log: {log})")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as err:
            done = subprocess.run(
                [sys.executable, "-m", "trainer", *args],
                env={
                    **os.environ,
                    **self.env,
                    "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
                    "WANDB_SILENT": "true",
                },
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        if done.returncode:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"demo: `python -m trainer {shlex.join(args)}` failed:\n{tail}")
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        for line in lines:
            print(json.dumps(line))
        return lines

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
        screen = Screen(
            ports[:2],
            ports[2],
            f"http://127.0.0.1:{explainer_port}/v1/decisions/<id>/explanation",
            latency=self.traffic.current,
        )
        screen.wait_for_consumers(int(self.env["ALLOCATOR_TOPIC_PARTITIONS"]))
        return screen


def complaints_of(split: str) -> Iterator[dict[str, Any]]:
    """Real CFPB complaints of ``split`` (never the holdout), as ``allocator produce`` sends
    them, in a fixed shuffled order: the file is grouped by source (one payday lender's sample
    after another), a bank's traffic is mixed.

    Each arrives as a new complaint of the bank's, ``bank-<CFPB id>``: the trainer splits a new id
    by its hash, so the humans' feedback on the demo's traffic lands in train, val and test like
    any new complaint's (under its CFPB id it would keep the file's test or val split and could
    never train the next model)."""
    from consumer.produce import Report, csv_complaints

    docs = list(csv_complaints(DATA, Report(), split))
    random.Random(f"demo:{split}").shuffle(docs)
    for doc in docs:
        yield {**doc, "complaint_id": f"bank-{doc['complaint_id']}"}
