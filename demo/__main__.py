"""``python -m demo``: champion, two consumers, promoter and explainer on the local stack; real
complaints stream, a challenger goes through shadow and a 20% canary, the humans' real labels come
back, the promoter decides.

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
from typing import Any

from demo import procs as procs_mod
from demo.flow import ROOT, Demo, complaints
from demo.report import report
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
    ap.add_argument("--messages", type=int, help="complaints to stream (default 1600; quick: 300)")
    ap.add_argument("--rate", type=float, help="complaints per second (default 20; quick: 100)")
    ap.add_argument("--down", action="store_true", help="stop what a previous demo left running")
    return ap.parse_args()


def _lifecycle(demo: Demo, docs: list[dict[str, Any]], screen: Screen, challenger: str) -> None:
    """Stream a quarter of ``docs`` under the champion alone, a quarter with ``challenger`` in
    shadow, then the rest with it as a 20% canary."""
    half = len(docs) // 2
    demo.stream(docs[: half // 2], screen, "champion only")
    demo.cli("strategy", "shadow", challenger, "--reason", "demo: challenger in shadow")
    demo.stream(docs[half // 2 : half], screen, "shadow")
    # the promoter may already have earned the challenger a canary on some tasks: move only the
    # others
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
    demo.stream(docs[half:], screen, "canary 20%")


def main() -> int:
    args = _args()
    os.chdir(ROOT)
    if args.down:
        return procs_mod.down()
    messages = args.messages or (300 if args.quick else 1600)
    demo = Demo.create(
        args.quick, messages, args.rate or (100.0 if args.quick else 20.0), stack_env()
    )
    started = time.monotonic()
    champion, challenger = demo.models()
    demo.cli("topics", "create")
    champ_ref = demo.cli("models", "register", str(champion)).split()[0]
    chall_ref = demo.cli("models", "register", str(challenger)).split()[0]
    demo.cli("strategy", "champion", champ_ref, "--reason", "demo: first champion")
    token = secrets.token_urlsafe(16)
    processes = procs_mod.Processes(ROOT / ".stack" / "demo-logs")
    stop = threading.Event()
    try:
        screen = demo.start(processes, token)
        humans = demo.humans(stop)
        _lifecycle(demo, list(complaints(messages)), screen, chall_ref)
        time.sleep(5)  # the last feedback reaches the promoter
        screen.show("done")
        stop.set()
        humans.join(10)
        report(demo, champ_ref, chall_ref, token, screen, time.monotonic() - started)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping its processes", file=sys.stderr)
        return 130
    finally:
        stop.set()
        processes.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
