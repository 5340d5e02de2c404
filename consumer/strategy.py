"""The deployment strategy (DESIGN section 4): the document, its validation, sticky arms and the
transitions.

Transitions (``champion``, ``canary``, ``shadow``, ``promote``, ``end``, ``rollback``) are pure
functions from the strategy in force to the new per-task plans; the ``allocator strategy`` commands
and the promoter both call them, and ``consumer.store.StrategyStore`` writes their result
(compare-and-set, history, announcement). ``task=None`` means every task the transition applies to.
Validation against the registry happens on write. This module does no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from consumer.contracts import schemas
from consumer.errors import StrategyError, StrategyValidationError

# The case system needs these on every allocation (allocation/v1 top-level fields).
ROUTING_TASKS = ("team", "issue", "vulnerable")

Mode = Literal["champion", "canary", "shadow"]


def bucket(salt: str, complaint_id: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, complaint id): sticky across pods, partitions and
    restarts."""
    digest = hashlib.sha256(f"{salt}\x00{complaint_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class TaskPlan:
    """What serves one task."""

    mode: Mode
    champion: str
    challenger: str | None = None
    weight: float = 0.0
    sample: float = 0.0
    salt: str = ""

    def arm(self, complaint_id: str) -> Literal["champion", "canary"]:
        """The arm whose prediction is published for this complaint."""
        if self.mode == "canary" and bucket(self.salt, complaint_id) < self.weight:
            return "canary"
        return "champion"

    def shadowed(self, complaint_id: str) -> bool:
        """True when the shadow challenger also scores this complaint."""
        return self.mode == "shadow" and bucket(self.salt, complaint_id) < self.sample

    @property
    def models(self) -> tuple[str, ...]:
        return (self.champion,) if self.challenger is None else (self.champion, self.challenger)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode, "champion": self.champion}
        if self.mode == "canary":
            doc |= {"challenger": self.challenger, "weight": self.weight, "salt": self.salt}
        elif self.mode == "shadow":
            doc |= {"challenger": self.challenger, "sample": self.sample, "salt": self.salt}
        return doc


@dataclass(frozen=True)
class Strategy:
    """A validated strategy document. ``version`` 0 means "from configuration", never written to
    Redis."""

    version: int
    tasks: Mapping[str, TaskPlan]
    updated_at: str = ""
    updated_by: str = ""
    reason: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def models(self) -> set[str]:
        return {m for plan in self.tasks.values() for m in plan.models}

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": "strategy/v1",
            "version": self.version,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "reason": self.reason,
            "tasks": {t: p.to_doc() for t, p in sorted(self.tasks.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_doc(), sort_keys=True)


HeadLookup = Callable[[str], Mapping[str, Any] | None]
"""Maps ``name@version`` to its manifest ``tasks`` (or None when the model is not registered)."""


def parse(doc: Mapping[str, Any], heads_of: HeadLookup | None = None) -> Strategy:
    """Validate a strategy document against the schema and, with ``heads_of``, against the registry.

    Refuses: schema violations, a missing routing task, an unknown model, a model without the task's
    head, a challenger equal to the champion. Raises ``StrategyValidationError`` listing every
    problem.
    """
    problems = schemas.errors("strategy/v1", doc)
    if problems:
        raise StrategyValidationError("invalid strategy: " + "; ".join(problems[:8]))
    tasks = {t: TaskPlan(**spec) for t, spec in doc["tasks"].items()}
    problems = [f"task {t!r} is required" for t in ROUTING_TASKS if t not in tasks]
    for task, plan in sorted(tasks.items()):
        if plan.challenger == plan.champion:
            problems.append(f"{task}: challenger and champion are both {plan.champion}")
        for ref in plan.models:
            if heads_of is None:
                continue
            heads = heads_of(ref)
            if heads is None:
                problems.append(f"{task}: model {ref} is not registered")
            elif task not in heads:
                problems.append(
                    f"{task}: model {ref} has no {task!r} head (it has {sorted(heads)})"
                )
    if problems:
        raise StrategyValidationError("invalid strategy: " + "; ".join(problems))
    return Strategy(
        version=doc["version"],
        tasks=tasks,
        updated_at=doc["updated_at"],
        updated_by=doc["updated_by"],
        reason=doc["reason"],
        raw=dict(doc),
    )


def next_doc(
    current: Strategy | None, tasks: Mapping[str, TaskPlan], reason: str, who: str
) -> dict[str, Any]:
    """The document that follows ``current`` with new ``tasks`` (version + 1)."""
    return {
        "schema": "strategy/v1",
        "version": (current.version if current else 0) + 1,
        "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "updated_by": who,
        "reason": reason,
        "tasks": {t: p.to_doc() for t, p in sorted(tasks.items())},
    }


# ---
# transitions -------------------------------------------------------------------------------------


def champion(
    current: Strategy | None, model: str, model_tasks: Collection[str], task: str | None = None
) -> dict[str, TaskPlan]:
    """``model`` serves and is published for ``task``, or for every task both it and the strategy
    have (every task of the model when there is no strategy yet). Any experiment on those tasks
    ends."""
    tasks = dict(current.tasks) if current else {}
    targets = [task] if task else sorted(set(model_tasks) & set(tasks) if tasks else model_tasks)
    for t in targets:
        tasks[t] = TaskPlan("champion", model)
    return tasks


def canary(
    current: Strategy | None, challenger: str, weight: float, task: str | None = None
) -> dict[str, TaskPlan]:
    """``challenger`` is published for a ``weight`` share of complaints; the champion keeps the
    rest.

    One salt per challenger: a complaint gets the same arm in every task, and raising the weight
    keeps every complaint already in the canary there."""
    return _each(
        current,
        task,
        lambda plan: TaskPlan(
            "canary", plan.champion, challenger, weight=weight, salt=f"canary:{challenger}"
        ),
    )


def shadow(
    current: Strategy | None, challenger: str, sample: float = 1.0, task: str | None = None
) -> dict[str, TaskPlan]:
    """``challenger`` also scores a ``sample`` share of complaints; only the champion is ever
    published."""
    return _each(
        current,
        task,
        lambda plan: TaskPlan(
            "shadow", plan.champion, challenger, sample=sample, salt=f"shadow:{challenger}"
        ),
    )


def promote(current: Strategy | None, task: str | None = None) -> dict[str, TaskPlan]:
    """The challenger becomes champion. Without ``task``, tasks that run no experiment are left
    alone; naming a task that runs none is an error."""

    def move(plan: TaskPlan) -> TaskPlan:
        if plan.challenger is None:
            if task:
                raise StrategyError(f"task {task!r} runs no experiment to promote")
            return plan
        return TaskPlan("champion", plan.challenger)

    return _each(current, task, move)


def end(current: Strategy | None, task: str | None = None) -> dict[str, TaskPlan]:
    """The experiment ends; the champion stays and serves alone."""
    return _each(current, task, lambda plan: TaskPlan("champion", plan.champion))


def rollback(previous: Strategy | None) -> dict[str, TaskPlan]:
    """The plans of the previous strategy version, to be written again as a new version."""
    if previous is None:
        raise StrategyError("no previous strategy to roll back to")
    return dict(previous.tasks)


def _each(
    current: Strategy | None, task: str | None, move: Callable[[TaskPlan], TaskPlan]
) -> dict[str, TaskPlan]:
    if current is None:
        raise StrategyError(
            "no strategy yet: set a champion first (allocator strategy champion MODEL)"
        )
    tasks = dict(current.tasks)
    if task is not None and task not in tasks:
        raise StrategyError(f"task {task!r} is not in the strategy")
    for t in [task] if task else sorted(tasks):
        tasks[t] = move(tasks[t])
    return tasks
