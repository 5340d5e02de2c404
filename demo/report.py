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
    demo: Demo, champion: str, challenger: str, token: str, screen: Screen, seconds: float
) -> None:
    print("\n" + "=" * 100)
    print(
        f"complaints-allocation demo: {len(demo.allocations)} allocations in {seconds / 60:.1f} "
        "min "
        f"({'tiny random models' if demo.quick else 'fine-tuned MiniLM models'}; CFPB data, test "
        "split)"
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
    print(f"\nChampion {champion}, challenger {challenger}. Strategy history (newest first):")
    print(demo.cli("strategy", "history", quiet=True))
    print("\nPromoter (its evidence, as `allocator promoter status` prints it):")
    status = demo.cli("promoter", "status", quiet=True)
    print(_evidence(status))
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


def _evidence(status: str) -> str:
    """One line per experiment: arms, their live accuracy, and the promoter's latest decision."""
    try:
        doc = json.loads(status)
    except ValueError:
        return status
    lines = [f"feedback: {json.dumps(doc.get('feedback', {}))}"]
    for exp in doc.get("experiments", []):
        arms = exp.get("arms", {})
        decision = exp.get("decision") or exp.get("evaluation") or {}
        ev = decision.get("evidence", {})
        arm_text = "  ".join(
            f"{name} {a.get('correct', 0)}/{a.get('n', 0)} ({(a.get('accuracy') or 0):.1%})"
            for name, a in sorted(arms.items())
        )
        p_values = ", ".join(
            f"{k}={ev[k]:.3g}" for k in ("p_better", "p_worse", "p_recall_worse") if k in ev
        )
        lines.append(
            f"{exp.get('task')}: {exp.get('mode')} {exp.get('challenger')} vs "
            f"{exp.get('champion')}: "
            f"{arm_text}; decision {decision.get('action', '?')}: {decision.get('reason', '')}"
            + (f" [{p_values}]" if p_values else "")
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
