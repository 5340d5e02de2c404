"""``allocator promoter status``: one JSON document summarising the promoter's state in Redis.

Read-only and replica-independent: everything comes from Redis (counters, experiments, decisions),
and each experiment's current evaluation is recomputed with the same rule the service applies.
"""

from __future__ import annotations

from typing import Any

from consumer.store import HISTORY_LIMIT, map_redis_errors
from promoter.evaluate import Evaluator, Policy, assess
from promoter.experiments import ARMS, Counts, running
from promoter.join import live_table
from promoter.state import JoinStore

RECENT_EXPERIMENTS = 50


def status(state: JoinStore, evaluator: Evaluator, policy: Policy) -> dict[str, Any]:
    current = evaluator.store.current()
    history = evaluator.store.history(HISTORY_LIMIT) if current else []
    now_running = {e.id: e for e in running(current, history).values()}
    with map_redis_errors("promoter status"):
        ids = [
            x.decode() for x in state.r.zrevrange(state.keys.experiments, 0, RECENT_EXPERIMENTS - 1)
        ]
    experiments = []
    for exp_id in [*now_running, *(i for i in ids if i not in now_running)]:
        got = evaluator.read(exp_id)
        if got is None and exp_id not in now_running:
            continue  # expired
        exp, counts, recorded = got or (
            now_running[exp_id],
            Counts.of(now_running[exp_id].mode, {}),
            None,
        )
        d = assess(exp, counts, policy)
        arms = {name: getattr(counts, name) for name in ARMS}
        experiments.append(
            {
                "id": exp_id,
                **exp.to_fields(),
                "running": exp_id in now_running,
                "arms": {
                    name: a.to_dict() | {"accuracy": a.accuracy, "vulnerable_recall": a.recall}
                    for name, a in arms.items()
                },
                "discordant": counts.discordance.to_dict() if counts.discordance else None,
                "evaluation": {"action": d.action, "reason": d.reason, "evidence": d.evidence},
                "decision": recorded,
            }
        )
    summary = state.summary()
    return {
        "auto_apply": policy.auto_apply,
        "policy": {
            "alpha": policy.alpha,
            "min_labels": policy.min_labels,
            "canary_weight": policy.canary_weight,
        },
        "strategy_version": current.version if current else None,
        "feedback": {
            k.partition(".")[2]: v for k, v in summary.items() if k.startswith("feedback.")
        },
        "records": summary,
        "experiments": experiments,
        "live": live_table(state.live()),
        "malformed_recent": state.malformed(),
    }
