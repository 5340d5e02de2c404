"""The demo's final report: every figure is measured in this run, from the allocations it read
back."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo.labels import truth

if TYPE_CHECKING:
    from demo.flow import Demo
    from demo.incident import Incident
    from demo.phases import Phases
    from demo.retrain import Retrain
    from demo.screen import Screen

HUMAN = {
    "team": 0.80,
    "issue": 0.71,
    "vulnerable_recall": 0.60,
}  # the triage team's figures to beat


def accuracy(allocations: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per published model version: team and issue accuracy, vulnerable recall, and the counts
    behind them."""
    hits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in allocations:
        t = truth(a.get("metadata") or {})
        if t is None:
            continue
        for key in ("all", a["predictions"]["team"]["model"]["version"]):
            h = hits[key]
            h["n"] += 1
            h["team"] += a["team"] == t["team"]
            h["issue"] += a["issue"] == t["issue"]
            if t["vulnerable"] == "yes":
                h["vulnerable"] += 1
                h["flagged"] += a["journey"] == "vulnerable"
    return {
        k: {
            "n": h["n"],
            "team": h["team"] / h["n"],
            "issue": h["issue"] / h["n"],
            "vulnerable_recall": h["flagged"] / h["vulnerable"]
            if h["vulnerable"]
            else float("nan"),
            "vulnerable_n": h["vulnerable"],
        }
        for k, h in hits.items()
    }


def report(
    demo: Demo,
    phases: Phases,
    screen: Screen,
    incident: Incident,
    retrained: Retrain,
    refs: tuple[str, str],
    token: str,
) -> None:
    with phases.run("report"):
        _report(demo, screen, incident, retrained, refs)
    _phases(demo, phases)


def _report(
    demo: Demo, screen: Screen, incident: Incident, retrained: Retrain, refs: tuple[str, str]
) -> None:
    print("\n" + "=" * 100)
    print(
        f"complaints-allocation demo: {len(demo.traffic.origin)} complaints sent, "
        f"{len(demo.allocations)} allocations "
        f"({'tiny random models' if demo.quick else 'fine-tuned MiniLM models'}; CFPB data, test "
        "split, then val)"
    )
    print("\n".join(screen.lines))
    print(
        "\nAccuracy of the published decisions against the humans' real labels (human team's "
        "figures in brackets)"
    )
    print(f"{'published by':28} {'n':>6} {'team':>8} {'issue':>8} {'vuln. recall':>13}")
    for key, m in sorted(accuracy(demo.allocations).items(), key=lambda kv: kv[0] != "all"):
        print(
            f"{key:28} {m['n']:6d} {m['team']:8.1%} {m['issue']:8.1%} "
            f"{m['vulnerable_recall']:8.1%} "
            f"(n={m['vulnerable_n']})"
        )
    print(
        f"{'human team':28} {'':6} {HUMAN['team']:8.0%} {HUMAN['issue']:8.0%} "
        f"{HUMAN['vulnerable_recall']:8.0%}"
    )
    print(f"\nChampion {refs[0]}, challenger {refs[1]}. Strategy history (newest first):")
    print(demo.cli("strategy", "history", quiet=True))
    print("\nPromoter (its decisions and evidence, as `allocator promoter status` prints them):")
    print(_evidence(demo.cli("promoter", "status", quiet=True)))
    print("\n" + "\n".join(incident.lines()))
    print("\n" + "\n".join(retrained.lines()))
    _explanation(demo)
    print(
        "\nEvery step by hand (same environment: KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and the "
        "ALLOCATOR_* names "
        "of .stack/demo-env):"
    )
    for cmd in dict.fromkeys(demo.commands):
        print(f"  {cmd}")
    env_file = Path(".stack") / "demo-env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(demo.env.items())))
    print(f"\nProcess logs: .stack/demo-logs/   Environment: {env_file}   Stop: make demo-down")


def _phases(demo: Demo, phases: Phases) -> None:
    print(
        "\nPhases (wall time; latency: from the demo's send to the committed allocation read back, "
        "exact quantiles of its complaints; redriven ones excluded)"
    )
    print(
        f"  {'phase':34} {'wall':>7} {'sent':>6} {'alloc.':>6} {'DLQ':>5} "
        f"{'p50':>8} {'p99':>8} {'n':>5}"
    )
    for p in phases.done:
        p50, p99, n = p.latency
        c = p.counts
        print(
            f"  {p.name:34} {p.seconds:6.1f}s {c.get('sent', 0):6d} {c.get('allocated', 0):6d} "
            f"{c.get('dead', 0):5d} {_ms(p50):>8} {_ms(p99):>8} {n:5d}"
        )
        for note in p.notes:
            print(f"  {'':34}   {note}")
    p50, p99, n = demo.traffic.quantiles()
    total = sum(p.seconds for p in phases.done)
    print(
        f"  {'all phases':34} {total:6.1f}s {len(demo.traffic.origin):6d} "
        f"{len(demo.allocations):6d} {'':5} {_ms(p50):>8} {_ms(p99):>8} {n:5d}"
    )
    print(
        f"\nEnd-to-end latency over the whole run: p50 {_ms(p50)}, p99 {_ms(p99)} ({n} complaints)"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _evidence(status: str) -> str:
    """One line per experiment, oldest first: arms and their live accuracy, then the promoter's
    decision (with its evidence), or what it would say now if the experiment had no decision."""
    try:
        doc = json.loads(status)
    except ValueError:
        return status
    lines = [f"feedback: {json.dumps(doc.get('feedback', {}))}"]
    for exp in reversed(doc.get("experiments", [])):
        arms = exp.get("arms", {})
        recorded = exp.get("decision")
        decision = recorded or exp.get("evaluation") or {}
        ev = decision.get("evidence", {})
        arm_text = "  ".join(
            f"{name} {a.get('correct', 0)}/{a.get('n', 0)} ({(a.get('accuracy') or 0):.1%})"
            for name, a in sorted(arms.items())
        )
        p_values = ", ".join(
            f"{k}={ev[k]:.3g}" for k in ("p_better", "p_worse", "p_recall_worse") if k in ev
        )
        if recorded:
            verdict = f"DECIDED {recorded.get('action', '?')}" + (
                " (applied)" if recorded.get("applied") else " (not applied)"
            )
        else:
            verdict = "running, no decision yet" if exp.get("running") else "ended undecided"
            verdict += f" (now: {decision.get('action', '?')})"
        lines.append(
            f"{exp.get('task')}: {exp.get('mode')} {exp.get('challenger')} vs "
            f"{exp.get('champion')}: {arm_text}; {verdict}: {decision.get('reason', '')}"
            + (f" [{p_values}]" if p_values and not recorded else "")
        )
    return "\n".join(lines)


def _explanation(demo: Demo) -> None:
    if not demo.allocations:
        return
    allocation = demo.allocations[-1]
    record = Path(".stack") / "demo-allocation.json"
    record.write_text(json.dumps(allocation))
    html, out = Path(".stack") / "demo-explanation.html", Path(".stack") / "demo-explanation.json"
    demo.cli(
        "explain",
        allocation["decision_id"],
        "--task",
        "team",
        "--allocation",
        str(record),
        "--html",
        str(html),
        "--json",
        str(out),
        quiet=True,
    )
    doc = json.loads(out.read_text())
    tokens = sorted(
        zip(doc.get("tokens", []), doc.get("values", []), strict=False), key=lambda tv: -tv[1]
    )[:8]
    print(
        f"\nWhy decision {allocation['decision_id']} went to team {allocation['team']!r} "
        f"(SHAP, model {allocation['predictions']['team']['model']['version']}): "
        + ", ".join(f"{t!r} {v:+.3f}" for t, v in tokens)
    )
    print(f"  the page a person reads: {html.resolve()}")
