"""Decide, and recommend or apply, for each running experiment (DESIGN section 6).

The rule of ``sequential.decide`` is applied after every joined label: inside each batch's
transaction, ``first_decision`` finds the first label of the batch after which it promotes or rolls
back; after the batch (and every minute for all running experiments) ``Evaluator.evaluate`` applies
it to the totals too. The first non-wait answer is the experiment's decision:
1. it is recorded once in the experiment's hash (HSETNX ``decision``, with the evidence at that
   label): whatever happens later, an experiment is decided at most once, by one replica;
2. with ``auto_apply`` it is applied as a strategy write (``StrategyStore.update``: compare-and-set,
   retried on conflict) whose reason cites the evidence: canary promote -> the challenger becomes
   champion of the task; shadow promote -> the challenger earns a canary at
   ``promoter_canary_weight``; rollback -> the experiment ends and the champion stays. The write
   happens only while the task's plan is still this experiment, so a retry after a crash, or a
   second replica, never acts twice; then ``applied`` is recorded;
3. without ``auto_apply`` it is a recommendation (log line, metric, ``allocator promoter status``).
   Turning ``auto_apply`` on later applies a recorded recommendation whose experiment still runs.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from consumer import strategy
from consumer.errors import StrategyConflictError, StrategyError
from consumer.store import StrategyStore, map_redis_errors
from consumer.strategy import Strategy, TaskPlan
from promoter.experiments import ARMS, Counts, Experiment
from promoter.sequential import (
    ArmArrays,
    ArmStats,
    Decision,
    Discordance,
    decide,
    evaluate,
)
from promoter.sequential import Policy as SeqPolicy
from promoter.state import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """The promoter settings that shape decisions."""

    alpha: float = 0.05
    min_labels: int = 50
    auto_apply: bool = False
    canary_weight: float = 0.1


@dataclass(frozen=True)
class Verdict:
    experiment: Experiment
    counts: Counts
    decision: Decision
    recorded: dict[str, Any] | None  # the experiment's decision record, once it has one


class _Superseded(StrategyError):
    """The task's plan is no longer this experiment: nothing to apply."""


def assess(exp: Experiment, counts: Counts, policy: Policy) -> Decision:
    return decide(
        counts.champion,
        counts.challenger,
        paired=exp.mode == "shadow",
        discordant=counts.discordance,
        alpha=policy.alpha,
        min_labels=policy.min_labels,
    )


def reason_for(exp: Experiment, d: Decision) -> str:
    """The strategy-history reason: what was done and the evidence for it."""
    e = d.evidence
    what = {
        ("canary", "promote"): f"promote {exp.challenger} to champion of {exp.task}",
        ("shadow", "promote"): f"canary {exp.challenger} for {exp.task} after its shadow run",
        (
            "canary",
            "rollback",
        ): f"end the {exp.task} canary of {exp.challenger}; {exp.champion} stays",
        (
            "shadow",
            "rollback",
        ): f"end the {exp.task} shadow run of {exp.challenger}; {exp.champion} stays",
    }[(exp.mode, d.action)]

    def acc(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    pairs = (
        f", discordant b={e['discordant_b']} c={e['discordant_c']}" if "discordant_b" in e else ""
    )
    return (
        f"promoter: {what}: {d.reason}; labels champion={e['n_champion']} "
        f"challenger={e['n_challenger']}, "
        f"accuracy {acc(e['accuracy_champion'])} vs {acc(e['accuracy_challenger'])}, vulnerable "
        "recall "
        f"{acc(e['recall_champion'])} vs {acc(e['recall_challenger'])}{pairs}; always-valid "
        "p_better="
        f"{e['p_better']:.3g} p_worse={e['p_worse']:.3g} p_recall_worse={e['p_recall_worse']:.3g} "
        f"(alpha={e['alpha']})"
    )


def new_tasks(
    current: Strategy | None, exp: Experiment, action: str, weight: float
) -> dict[str, TaskPlan]:
    """The strategy tasks after applying ``action`` to ``exp``: a rollback ends the experiment, a
    canary that passes is promoted, a shadow that passes moves on to a canary at ``weight``."""
    if current is None or not exp.runs_as(current.tasks.get(exp.task)):
        raise _Superseded(f"{exp.id} no longer runs")
    if action == "rollback":
        return strategy.end(current, exp.task)
    if exp.mode == "canary":
        return strategy.promote(current, exp.task)
    return strategy.canary(current, exp.challenger, weight, exp.task)


def decision_doc(exp: Experiment, d: Decision, auto_apply: bool) -> dict[str, Any]:
    """The record kept in the experiment's hash (``decision``)."""
    return {
        "action": d.action,
        "reason": reason_for(exp, d),
        "evidence": d.evidence,
        "decided_at": time.time(),
        "applied": False,
        "auto_apply": auto_apply,
    }


def first_decision(
    exp: Experiment, fields: Mapping[str, str], labels: Sequence[Mapping[str, int]], policy: Policy
) -> Decision | None:
    """The decision after the first of ``labels`` (counter increments, in order, on top of
    ``fields``) at which the rule says promote or roll back; None if it waits after each of them.
    ``decide`` after every label, as the test's guarantees assume, computed at once with the
    vectorised rule (``sequential.evaluate``)."""
    if not labels:
        return None
    base = Counts.of(exp.mode, fields)

    def path(name: str, start: int) -> npt.NDArray[np.int64]:
        return start + np.cumsum([inc.get(name, 0) for inc in labels])

    arms = [
        ArmArrays(*(path(f"{arm}.{f}", getattr(getattr(base, arm), f)) for f in ArmArrays._fields))
        for arm in ARMS
    ]
    pair = base.discordance
    discordant = (path("b", pair.b), path("c", pair.c)) if pair is not None else None
    ev = evaluate(arms[0], arms[1], discordant, SeqPolicy(policy.alpha, policy.min_labels))
    decided = np.flatnonzero(ev.action)
    if not decided.size:
        return None
    k = int(decided[0])
    champion, challenger = (ArmStats(*(int(np.asarray(x)[k]) for x in a)) for a in arms)
    d = assess(
        exp,
        Counts(
            champion,
            challenger,
            None
            if discordant is None
            else Discordance(int(discordant[0][k]), int(discordant[1][k])),
        ),
        policy,
    )
    return None if d.action == "wait" else d  # never None: decide() words evaluate()'s action


class Evaluator:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        strategies: StrategyStore,
        policy: Policy,
        on_verdict: Callable[[Verdict], None] = lambda v: None,
        on_decision: Callable[[Experiment, str, bool], None] = lambda e, a, applied: None,
    ) -> None:
        # synchronous, whatever redis-py's "sync or awaitable" result types say
        self.r: Any = client
        self.keys = Keys(prefix)
        self.store = strategies
        self.policy = policy
        self.on_verdict = on_verdict
        self.on_decision = on_decision
        self.who = f"promoter@{socket.gethostname()}"

    def read(self, exp_id: str) -> tuple[Experiment, Counts, dict[str, Any] | None] | None:
        with map_redis_errors("experiment read"):
            raw = self.r.hgetall(self.keys.experiment(exp_id))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        exp = Experiment.from_fields(fields)
        recorded = json.loads(fields["decision"]) if "decision" in fields else None
        return exp, Counts.of(exp.mode, fields), recorded

    def evaluate(
        self, exp_ids: Iterable[str], running: Mapping[str, Experiment], fresh: Collection[str] = ()
    ) -> list[Verdict]:
        """Decide each experiment that still runs; record and (maybe) apply the first non-wait
        decision.

        ``fresh``: experiments whose decision the batch transaction has just recorded
        (``first_decision``), to be announced and applied here."""
        live = {e.id: e for e in running.values()}
        verdicts = []
        for exp_id in sorted(set(exp_ids) & set(live)):
            got = self.read(exp_id)
            if got is None:
                continue
            exp, counts, recorded = got
            decision = assess(exp, counts, self.policy)
            if recorded is None and decision.action != "wait":
                recorded = self._record(exp, decision)
            elif recorded is not None and exp_id in fresh:
                self._announce(exp, recorded)
            if recorded is not None and self.policy.auto_apply and not recorded.get("applied"):
                recorded = self._apply(exp, recorded)
            verdict = Verdict(exp, counts, decision, recorded)
            self.on_verdict(verdict)
            verdicts.append(verdict)
        return verdicts

    def decider(
        self, exp: Experiment, fields: Mapping[str, str], labels: Sequence[Mapping[str, int]]
    ) -> Any:
        """For ``JoinStore.apply``: the decision record of the first label of a batch that decides,
        or None."""
        d = first_decision(exp, fields, labels, self.policy)
        return None if d is None else decision_doc(exp, d, self.policy.auto_apply)

    def _record(self, exp: Experiment, d: Decision) -> dict[str, Any]:
        doc = decision_doc(exp, d, self.policy.auto_apply)
        key = self.keys.experiment(exp.id)
        with map_redis_errors("decision record"):
            if not self.r.hsetnx(key, "decision", json.dumps(doc)):  # another replica decided first
                return dict(json.loads(self.r.hget(key, "decision") or b"{}"))
        self._announce(exp, doc)
        return doc

    def _announce(self, exp: Experiment, doc: Mapping[str, Any]) -> None:
        verb = "applying" if self.policy.auto_apply else "recommending (auto_apply is off)"
        log.info(f"{verb} {doc['action']}", extra={"experiment": exp.id, "reason": doc["reason"]})
        if not self.policy.auto_apply:
            self.on_decision(exp, doc["action"], False)

    def _apply(self, exp: Experiment, recorded: dict[str, Any]) -> dict[str, Any]:
        action, reason = recorded["action"], recorded["reason"]
        try:
            new = self.store.update(
                lambda cur: new_tasks(cur, exp, action, self.policy.canary_weight), reason, self.who
            )
            outcome: dict[str, Any] = {"applied": True, "strategy_version": new.version}
            log.info(
                f"applied {action}", extra={"experiment": exp.id, "strategy_version": new.version}
            )
            self.on_decision(exp, action, True)
        except _Superseded:
            outcome = {
                "applied": True,
                "superseded": True,
            }  # somebody else changed the task first: done
            log.info("decision superseded by a strategy change", extra={"experiment": exp.id})
            self.on_decision(exp, action, False)
        except (StrategyConflictError, StrategyError) as exc:
            # conflicts beyond update()'s retries, or a refused document: try again at the next
            # evaluation
            log.warning(
                "could not apply the decision yet", extra={"experiment": exp.id, "error": str(exc)}
            )
            return recorded
        doc = recorded | outcome
        with map_redis_errors("decision record"):
            self.r.hset(self.keys.experiment(exp.id), "decision", json.dumps(doc))
        return doc
