"""Feedback into a retraining run, and its challenger judged on evidence.

1. **feedback and retrain**: ``allocator promoter export`` writes the joined feedback (the humans'
   labels and the complaint text, read back from Kafka); ``python -m trainer train`` trains on it
   alone (its rows split by complaint-id hash: train, val for the thresholds, test for the figures)
   in a short bounded run (``demo/retrain.yaml``; ``--quick``: ``demo/retrain.quick.yaml`` on a tiny
   random encoder). Its package is registered.
2. **retrained canary**: any experiment still undecided ends, the new model goes out as a 20%
   canary on every task, and complaints keep coming until the promoter (``ALLOCATOR_AUTO_APPLY``)
   has decided on each task, or the budget runs out: the report says which.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.flow import CACHE, Demo
from demo.incident import counts
from demo.phases import Phases
from demo.screen import Screen


@dataclass
class Retrain:
    """What the report says about the retraining and its canary."""

    exported: dict[str, Any] = field(default_factory=dict)  # what `promoter export` printed
    feedback_splits: Counter[str] = field(default_factory=Counter)
    package: dict[str, Any] = field(default_factory=dict)  # the trainer's last JSON line
    ref: str = ""
    tasks: list[str] = field(default_factory=list)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> decision record
    waiting: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # task -> experiment, undecided
    sent: int = 0

    def lines(self) -> list[str]:
        """The report's paragraph."""
        skipped = self.exported.get("skipped") or {}
        test = self.package.get("test", {})
        figures = ", ".join(
            f"{t} {test[t]['accuracy']:.1%} (n={test[t].get('n', '?')})"
            for t in ("team", "issue", "vulnerable")
            if t in test
        )
        out = [
            f"Feedback into retraining, and the next challenger ({self.ref}):",
            f"  allocator promoter export: {self.exported.get('rows', 0)} joined feedback rows"
            + (f" (skipped: {json.dumps(skipped)})" if skipped else "")
            + f"; by the trainer's split rule: {counts(self.feedback_splits)} (the run trains on"
            " the train rows, calibrates on val and is measured on test)",
            f"  short run, on the feedback's test share: {figures}",
            f"  20% canary on {', '.join(self.tasks)}, {self.sent} complaints:",
        ]
        for task in self.tasks:
            d = self.decisions.get(task)
            if d is not None:
                version = d.get("strategy_version")
                applied = (
                    f"applied: strategy v{version}"
                    if version
                    else ("applied" if d.get("applied") else "not applied")
                )
                out.append(f"    {task}: {d['action'].upper()} ({applied}): {d['reason']}")
                continue
            exp = self.waiting.get(task, {})
            arms = exp.get("arms", {})
            labels = ", ".join(f"{a} {v.get('n', 0)}" for a, v in sorted(arms.items()))
            reason = exp.get("evaluation", {}).get("reason", "no experiment seen")
            out.append(f"    {task}: NO DECISION in time ({reason}; labels {labels})")
        return out


def retrain(demo: Demo, phases: Phases) -> Retrain:
    from trainer.splits import hash_split

    result = Retrain()
    with phases.run("feedback export and retrain") as phase:
        # paths relative to the checkout (the demo runs there), as an operator would type them
        feedback = Path(".stack") / "demo-feedback.jsonl"
        result.exported = json.loads(demo.cli("promoter", "export", "--out", str(feedback)))
        ids = [json.loads(line)["complaint_id"] for line in feedback.read_text().splitlines()]
        result.feedback_splits = Counter(hash_split(cid) for cid in ids)
        out = Path(".stack") / "demo-retrain"
        shutil.rmtree(out, ignore_errors=True)
        config = "retrain.quick.yaml" if demo.quick else "retrain.yaml"
        # the feedback alone: the next model learns from the humans' decisions on the bank's own
        # complaints (its train share), and is checked on their val and test shares
        args = ["--config", str(Path("demo") / config), "--data", str(feedback)]
        args += ["--out", str(out), "--version", f"r-{demo.run}"]
        if demo.quick:
            args += ["--base_model", str(_tiny_base())]
        lines = demo.trainer("train", *args, log=Path(".stack") / "demo-logs" / "retrain.log")
        result.package = lines[-1]
        result.ref = demo.cli("models", "register", result.package["package"]).split()[0]
        test = result.package.get("test", {})
        phase.notes.append(
            f"{result.exported.get('rows', 0)} feedback rows exported; {result.ref} trained: "
            + ", ".join(f"{t} {test[t]['accuracy']:.1%}" for t in ("team", "issue") if t in test)
            + " on test"
        )
    return result


def canary_on_evidence(
    demo: Demo, phases: Phases, screen: Screen, result: Retrain, budget: int, timeout: float
) -> None:
    """Canary ``result.ref`` on every task; stream until the promoter decides each, or ``budget``
    complaints or ``timeout`` seconds have gone by."""
    with phases.run("retrained canary") as phase:
        tasks = json.loads(demo.cli("strategy", "show", quiet=True))["tasks"]
        if any(plan["mode"] != "champion" for plan in tasks.values()):
            demo.cli(
                "strategy",
                "end",
                "--reason",
                "demo: the earlier experiment is undecided; it ends before the next challenger",
            )
        result.tasks = sorted(tasks)
        demo.cli(
            "strategy",
            "canary",
            result.ref,
            "--weight",
            "0.2",
            "--reason",
            "demo: 20% canary of the model retrained on feedback",
        )
        # complaints flow while the promoter is asked every few seconds; they stop once it has
        # decided on every task, or at the budget, or the timeout
        stop, sent = threading.Event(), []
        docs = demo.take(budget)
        sender = threading.Thread(
            target=lambda: sent.extend(demo.traffic.stream(docs, screen.show, stop=stop)),
            name="demo-sender",
            daemon=True,
        )
        sender.start()
        deadline = time.monotonic() + timeout
        while sender.is_alive() and not stop.is_set():
            time.sleep(3)
            _read_status(demo, result)
            if _decided(result) or time.monotonic() > deadline:
                stop.set()
        sender.join()
        result.sent = len(sent)
        settle = time.monotonic() + 8  # the last labels are still on their way to the promoter
        while not _decided(result) and time.monotonic() < settle:
            screen.show("retrained canary: waiting for the promoter")
            time.sleep(3)
            _read_status(demo, result)
        phase.notes.append(
            f"{result.sent} complaints; the promoter decided "
            + (
                ", ".join(f"{t}: {d['action']}" for t, d in sorted(result.decisions.items()))
                or "nothing"
            )
            + (
                f"; no decision in time for {', '.join(sorted(result.waiting))}"
                if result.waiting
                else ""
            )
        )


def _decided(result: Retrain) -> bool:
    return bool(result.tasks) and set(result.decisions) >= set(result.tasks)


def _read_status(demo: Demo, result: Retrain) -> None:
    """The promoter's decision records for the retrained model's experiments, as ``allocator
    promoter status`` reports them."""
    doc = json.loads(demo.cli("promoter", "status", quiet=True))
    result.waiting = {}
    for exp in doc.get("experiments", []):
        if exp.get("mode") != "canary" or exp.get("challenger") != result.ref:
            continue
        if exp.get("decision"):
            result.decisions[exp["task"]] = exp["decision"]
        else:
            result.waiting[exp["task"]] = exp
    for task in result.decisions:
        result.waiting.pop(task, None)


def _tiny_base() -> Path:
    """The quick retraining's base model: the tiny random encoder, written once and cached."""
    from trainer.tiny import tiny_base

    folder = CACHE / "tiny-base-s2"
    if not (folder / "tokenizer.json").is_file():  # written last
        tiny_base(folder, seed=2)
    return folder
