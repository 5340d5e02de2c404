"""Experiments: one per task whose strategy mode is ``canary`` or ``shadow``, and which labels count
in it.

An experiment is keyed by (mode, task, champion, challenger, salt): changing any of them starts
another one with fresh counts, while a change of canary ``weight`` or shadow ``sample`` keeps it (a
higher weight keeps every complaint already in the canary there). ``start_version`` is the first
strategy version from which the task's plan has been that experiment, so an allocation made before
it (e.g. by the same champion, in champion mode) never counts in it.

Which label counts where (``canary_increments``, ``shadow_increments``):
* canary: the allocation's prediction for the task tells the arm (``canary`` by the challenger,
  ``champion`` by the champion); one complaint counts in one arm (the unpaired test).
* shadow: the allocation (champion) and the shadow result (challenger) of the same decision count in
  both arms and in the discordant pairs (the paired test).
* the vulnerable-recall guardrail counts, per arm, the model's own ``vulnerable`` flag in that arm:
  the published ``vulnerable`` prediction of the allocation, and for the shadow arm the shadow's
  own ``vulnerable`` prediction when it made one (else promoting this task would not change that
  flag, so it is the champion's too). Not the allocation's ``vulnerable``: the customer-record and
  keyword signals set it the same in both arms, which would blur the models' difference.
* each arm also counts its automated share (the prediction's routing): coverage and accuracy on
  it, in the decision's evidence, so that a challenger is compared on how much it may decide
  alone at the target, not only on raw accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from consumer.strategy import Strategy, TaskPlan
from promoter.records import AllocRec, FeedbackRec, Pred, ShadowRec, model_flag
from promoter.sequential import ArmStats, Discordance

ExperimentMode = Literal["canary", "shadow"]
ArmName = Literal["champion", "challenger"]
ARMS: tuple[ArmName, ...] = ("champion", "challenger")
_META = ("mode", "task", "champion", "challenger", "salt", "start_version")


@dataclass(frozen=True)
class Experiment:
    mode: ExperimentMode
    task: str
    champion: str
    challenger: str
    salt: str
    start_version: int = 0

    @property
    def id(self) -> str:
        """Stable identity (start_version excluded: it is learnt, not chosen)."""
        return "|".join((self.mode, self.task, self.champion, self.challenger, self.salt))

    def runs_as(self, plan: TaskPlan | None) -> bool:
        """True when ``plan`` is still this experiment."""
        return plan is not None and (plan.mode, plan.champion, plan.challenger, plan.salt) == (
            self.mode,
            self.champion,
            self.challenger,
            self.salt,
        )

    @classmethod
    def of(cls, task: str, plan: TaskPlan, start_version: int = 0) -> Experiment | None:
        if plan.mode == "champion" or plan.challenger is None:
            return None
        return cls(plan.mode, task, plan.champion, plan.challenger, plan.salt, start_version)

    def canary_arm(self, alloc: AllocRec) -> ArmName | None:
        """The arm an allocation served in this canary, or None when it was not part of it."""
        p = alloc.predictions.get(self.task)
        if self.mode != "canary" or p is None or alloc.strategy_version < self.start_version:
            return None
        if p.arm == "canary" and p.model == self.challenger:
            return "challenger"
        if p.arm == "champion" and p.model == self.champion:
            return "champion"
        return None

    def takes_shadow(self, alloc: AllocRec, shadow: ShadowRec) -> bool:
        """True when this shadow experiment compares exactly these two predictions."""
        published, scored = alloc.predictions.get(self.task), shadow.predictions.get(self.task)
        return (
            self.mode == "shadow"
            and published is not None
            and scored is not None
            and alloc.strategy_version >= self.start_version
            and published.model == self.champion
            and scored.model == self.challenger
        )

    def to_fields(self) -> dict[str, str]:
        return {k: str(getattr(self, k)) for k in _META}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Experiment:
        return cls(
            fields["mode"],  # type: ignore[arg-type]
            fields["task"],
            fields["champion"],
            fields["challenger"],
            fields["salt"],
            int(fields["start_version"]),
        )


def running(current: Strategy | None, history: Sequence[Strategy] = ()) -> dict[str, Experiment]:
    """Per task, the experiment in force (``history`` newest first, as ``StrategyStore.history``
    gives it)."""
    out: dict[str, Experiment] = {}
    if current is None:
        return out
    for task, plan in current.tasks.items():
        exp = Experiment.of(task, plan)
        if exp is None:
            continue
        start = current.version
        for older in history:  # walk back while the task's plan was the same experiment
            if not exp.runs_as(older.tasks.get(task)):
                break
            start = older.version
        out[task] = Experiment(exp.mode, task, exp.champion, exp.challenger, exp.salt, start)
    return out


def _arm(arm: ArmName, pred: Pred, truth: str, fb: FeedbackRec, flagged: bool) -> dict[str, int]:
    stats = ArmStats()
    stats.record(
        pred.label == truth, vulnerable=fb.vulnerable, flagged=flagged, automated=bool(pred.auto)
    )
    return {f"{arm}.{k}": v for k, v in stats.to_dict().items()}


def canary_increments(exp: Experiment, alloc: AllocRec, fb: FeedbackRec) -> dict[str, int] | None:
    """Counter increments of one label in a canary, or None when the allocation was not part of
    it."""
    arm, truth = exp.canary_arm(alloc), fb.labels.get(exp.task)
    if arm is None or truth is None:
        return None
    return _arm(arm, alloc.predictions[exp.task], truth, fb, bool(model_flag(alloc.predictions)))


def shadow_increments(
    exp: Experiment, alloc: AllocRec, shadow: ShadowRec, fb: FeedbackRec
) -> dict[str, int] | None:
    """Counter increments of one label in a shadow experiment (both arms and the discordant
    pair)."""
    truth = fb.labels.get(exp.task)
    if truth is None or not exp.takes_shadow(alloc, shadow):
        return None
    a, b = alloc.predictions[exp.task], shadow.predictions[exp.task]
    flagged_a = bool(model_flag(alloc.predictions))
    # a shadow that does not score vulnerable would leave the champion's flag as it is
    own = model_flag(shadow.predictions)
    flagged_b = flagged_a if own is None else own
    pair = Discordance()
    pair.record(a.label == truth, b.label == truth)
    return (
        _arm("champion", a, truth, fb, flagged_a)
        | _arm("challenger", b, truth, fb, flagged_b)
        | pair.to_dict()
    )


@dataclass(frozen=True)
class Counts:
    """An experiment's counters as read back from Redis."""

    champion: ArmStats
    challenger: ArmStats
    discordance: Discordance | None

    @classmethod
    def of(cls, mode: ExperimentMode, fields: Mapping[str, str]) -> Counts:
        """Raises ValueError on inconsistent counts (never expected: they are only ever incremented
        together)."""

        def arm(name: str) -> ArmStats:
            prefix = f"{name}."
            return ArmStats.from_dict(
                {
                    f: int(fields.get(prefix + f, 0)) for f in ArmStats().to_dict()
                }  # absent: nothing counted yet
            )

        pair = (
            Discordance(int(fields.get("b", 0)), int(fields.get("c", 0)))
            if mode == "shadow"
            else None
        )
        return cls(arm("champion"), arm("challenger"), pair)
