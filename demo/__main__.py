"""``python -m demo``: champion, two consumers, promoter and explainer on the local stack; real
complaints stream through the whole lifecycle, each phase timed:

1. champion only;
2. bad release: a 20% canary whose graph fails at run time, and two records that are not JSON,
   reach the DLQ;
3. fix and redrive: the canary ends, the model failures are redriven and allocated;
4. shadow, then 5. a 20% canary of the challenger, the humans' real labels coming back and the
   promoter deciding on them;
6. the joined feedback is exported and a short retraining run registers the next challenger;
7. it goes out as a 20% canary, and the promoter decides on evidence.

    python -m demo [--quick] [--messages N] [--rate R]     (make demo)
    python -m demo --down                                  (make demo-down)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time

from demo import procs as procs_mod
from demo.flow import ROOT, Demo
from demo.incident import bad_release, fix_and_redrive
from demo.phases import Phases
from demo.report import report
from demo.retrain import canary_on_evidence, retrain
from demo.screen import Screen


def stack_env() -> dict[str, str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"):
        return {k: os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    from bench.common import stack_env as up

    return up()


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny random models and a few hundred complaints (CI)"
    )
    ap.add_argument(
        "--messages",
        type=int,
        help="complaints through champion, shadow and canary (default 1000; quick: 300); the "
        "bad release adds a sixth of that, the retrained canary streams until the promoter decides",
    )
    ap.add_argument("--rate", type=float, help="complaints per second (default 20; quick: 100)")
    ap.add_argument("--down", action="store_true", help="stop what a previous demo left running")
    return ap.parse_args()


def _lifecycle(demo: Demo, phases: Phases, screen: Screen, challenger: str) -> None:
    """A quarter of the messages with ``challenger`` in shadow, then half with it as a 20%
    canary (the champion-only quarter comes first, before the bad release)."""
    quarter = demo.messages // 4
    with phases.run("shadow"):
        demo.cli("strategy", "shadow", challenger, "--reason", "demo: challenger in shadow")
        demo.traffic.stream(demo.take(quarter), screen.show)
    with phases.run("canary 20%"):
        # the promoter may already have earned the challenger a canary on some tasks: move only
        # the others
        tasks = json.loads(demo.cli("strategy", "show", quiet=True))["tasks"]
        for task in sorted(t for t, plan in tasks.items() if plan["mode"] == "shadow"):
            demo.cli(
                "strategy",
                "canary",
                challenger,
                "--weight",
                "0.2",
                "--task",
                task,
                "--reason",
                "demo: 20% canary",
            )
        demo.traffic.stream(demo.take(demo.messages - 2 * quarter), screen.show)
        time.sleep(3)  # the last feedback reaches the promoter


def main() -> int:
    args = _args()
    os.chdir(ROOT)
    if args.down:
        return procs_mod.down()
    messages = args.messages or (300 if args.quick else 1000)
    demo = Demo.create(
        args.quick, messages, args.rate or (100.0 if args.quick else 20.0), stack_env()
    )
    phases = Phases(demo.traffic)
    started = time.monotonic()
    token = secrets.token_urlsafe(16)
    processes = procs_mod.Processes(ROOT / ".stack" / "demo-logs")
    stop = threading.Event()
    try:
        with phases.run("setup: models, topics, processes"):
            champion, challenger = demo.models()
            demo.cli("topics", "create")
            champ_ref = demo.cli("models", "register", str(champion)).split()[0]
            chall_ref = demo.cli("models", "register", str(challenger)).split()[0]
            demo.cli("strategy", "champion", champ_ref, "--reason", "demo: first champion")
            screen = demo.start(processes, token)
            readers = demo.traffic.readers(stop)
        with phases.run("champion only"):
            demo.traffic.stream(demo.take(messages // 4), screen.show)
        incident = bad_release(demo, phases, screen, champion, max(50, messages // 6))
        fix_and_redrive(demo, phases, screen, incident)
        _lifecycle(demo, phases, screen, chall_ref)
        retrained = retrain(demo, phases)
        canary_on_evidence(
            demo, phases, screen, retrained, budget=1200 if args.quick else 600, timeout=150
        )
        screen.show("done")
        stop.set()
        readers.join(10)
        report(demo, phases, screen, incident, retrained, (champ_ref, chall_ref), token)
        print(f"\nWall time, everything: {(time.monotonic() - started) / 60:.1f} min")
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping its processes", file=sys.stderr)
        return 130
    finally:
        stop.set()
        processes.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
