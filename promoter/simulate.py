"""Monte Carlo operating characteristics of the promotion rule in ``sequential``.

``run`` simulates K experiments in which labels arrive one by one and applies the rule after EVERY
label, up to ``max_labels`` labels (a label is one complaint; in a canary it belongs to one arm, in
a shadow to both). To be fast it evaluates ``sequential.evaluate``, the exact rule ``decide``
applies, on the running counts of all paths at once; a unit test checks the two agree label by
label. The first non-wait answer ends an experiment.

    python -m promoter.simulate
    # prints a table, then one JSON object with the figures on the last line
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from promoter.sequential import ArmArrays, Policy, evaluate

Bools = npt.NDArray[np.bool_]
_BLOCK = 1000  # labels evaluated per step; stop early once every path has decided


@dataclass(frozen=True)
class Scenario:
    name: str
    design: Literal["canary", "shadow"]
    p_champion: float  # true accuracies
    p_challenger: float
    recall_champion: float = 0.9  # true vulnerable-customer recalls
    recall_challenger: float = 0.9
    weight: float = 0.2  # canary: share of complaints the challenger serves
    # shadow: phi between the two models' correctness (and between their flags)
    correlation: float = 0.5
    prevalence: float = 0.1  # share of customers people judge vulnerable

    @property
    def challenger_better(self) -> bool:
        return (
            self.p_challenger > self.p_champion and self.recall_challenger >= self.recall_champion
        )


@dataclass(frozen=True)
class Result:
    scenario: str
    design: str
    experiments: int
    max_labels: int
    promote_rate: float
    rollback_rate: float
    wait_rate: float  # undecided after max_labels
    false_promotion_rate: (
        float | None
    )  # the promote rate when the challenger is not better, else None
    median_labels_to_decision: float | None  # over the experiments that decided


def correlated_bernoulli(
    p1: float, p2: float, phi: float, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[Bools, Bools]:
    """Two Bernoulli arrays with marginals p1, p2 and correlation phi, from one uniform per cell."""
    p11 = p1 * p2 + phi * math.sqrt(p1 * (1 - p1) * p2 * (1 - p2))
    if not (max(0.0, p1 + p2 - 1) <= p11 <= min(p1, p2)):
        raise ValueError(f"correlation {phi} is impossible with marginals {p1}, {p2}")
    u = rng.random(shape)
    # [0, p11): both; [p11, p1): first only; [p1, p1 + p2 - p11): second only; the rest: neither.
    return u < p1, (u < p11) | ((u >= p1) & (u < p1 + p2 - p11))


def sample_paths(
    sc: Scenario, experiments: int, max_labels: int, rng: np.random.Generator
) -> tuple[ArmArrays, ArmArrays, tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]] | None]:
    """Running counts after each label, each of shape (experiments, max_labels): champion,
    challenger, and the discordant (b, c) for a shadow (None for a canary)."""
    shape = (experiments, max_labels)
    vulnerable = rng.random(shape) < sc.prevalence
    if sc.design == "shadow":
        right_a, right_b = correlated_bernoulli(
            sc.p_champion, sc.p_challenger, sc.correlation, shape, rng
        )
        flag_a, flag_b = correlated_bernoulli(
            sc.recall_champion, sc.recall_challenger, sc.correlation, shape, rng
        )
        in_a = in_b = np.ones(shape, dtype=bool)
    else:
        in_b = rng.random(shape) < sc.weight
        in_a = ~in_b
        right_a, right_b = rng.random(shape) < sc.p_champion, rng.random(shape) < sc.p_challenger
        flag_a, flag_b = (
            rng.random(shape) < sc.recall_champion,
            rng.random(shape) < sc.recall_challenger,
        )

    def cum(x: Bools) -> npt.NDArray[np.int32]:
        return np.cumsum(x, axis=1, dtype=np.int32)

    arms = tuple(
        ArmArrays(cum(inn), cum(inn & right), cum(inn & vulnerable), cum(inn & vulnerable & flag))
        for inn, right, flag in ((in_a, right_a, flag_a), (in_b, right_b, flag_b))
    )
    discordant = (
        (cum(right_a & ~right_b), cum(right_b & ~right_a)) if sc.design == "shadow" else None
    )
    return arms[0], arms[1], discordant


def first_decisions(
    action: npt.NDArray[np.int8],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Per path: the first non-wait action (0 if none) and the 1-based label at which it came (0 if
    none)."""
    decided = action != 0
    first = decided.argmax(axis=1)
    any_ = decided.any(axis=1)
    rows = np.arange(action.shape[0])
    return np.where(any_, action[rows, first], 0).astype(np.int8), np.where(any_, first + 1, 0)


def run(
    sc: Scenario,
    *,
    experiments: int = 200,
    max_labels: int = 10_000,
    policy: Policy | None = None,
    seed: int = 0,
    chunk: int = 100,
) -> Result:
    """Simulate ``experiments`` independent experiments (seeded, so reproducible) and summarise
    them."""
    policy = policy or Policy()
    rng = np.random.default_rng(seed)
    actions, labels = [], []
    for start in range(0, experiments, chunk):
        champion, challenger, discordant = sample_paths(
            sc, min(chunk, experiments - start), max_labels, rng
        )
        act = np.zeros(np.asarray(champion.n).shape[0], dtype=np.int8)
        at = np.zeros_like(act, dtype=np.int64)
        for lo in range(0, max_labels, _BLOCK):
            cols = slice(lo, lo + _BLOCK)
            todo = act == 0
            if not todo.any():
                break
            ev = evaluate(
                ArmArrays(*(np.asarray(x)[todo, cols] for x in champion)),
                ArmArrays(*(np.asarray(x)[todo, cols] for x in challenger)),
                None
                if discordant is None
                else (discordant[0][todo, cols], discordant[1][todo, cols]),
                policy,
            )
            a, i = first_decisions(ev.action)
            act[todo], at[todo] = a, np.where(a != 0, i + lo, 0)
        actions.append(act)
        labels.append(at)
    act, at = np.concatenate(actions), np.concatenate(labels)
    promote = float(np.mean(act == 1))
    return Result(
        scenario=sc.name,
        design=sc.design,
        experiments=experiments,
        max_labels=max_labels,
        promote_rate=promote,
        rollback_rate=float(np.mean(act == -1)),
        wait_rate=float(np.mean(act == 0)),
        false_promotion_rate=None if sc.challenger_better else promote,
        median_labels_to_decision=float(np.median(at[act != 0])) if (act != 0).any() else None,
    )


def default_scenarios() -> list[tuple[Scenario, int]]:
    """(scenario, experiments) for the default run: both designs, null with more runs for a tighter
    rate."""
    base = [
        (Scenario("null", "canary", 0.80, 0.80), 400),
        (Scenario("better", "canary", 0.80, 0.88), 200),
        (Scenario("worse", "canary", 0.80, 0.70), 200),
        (Scenario("better_lower_recall", "canary", 0.80, 0.88, recall_challenger=0.75), 200),
    ]
    return base + [(replace(sc, design="shadow"), n) for sc, n in base]


_COLUMNS = (
    "design",
    "scenario",
    "experiments",
    "promote",
    "rollback",
    "wait",
    "false_promotion",
    "median_labels",
)


def _row(r: Result) -> tuple[object, ...]:
    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    rates = (r.promote_rate, r.rollback_rate, r.wait_rate, r.false_promotion_rate)
    return (
        r.design,
        r.scenario,
        r.experiments,
        *(fmt(x, ".3f") for x in rates),
        fmt(r.median_labels_to_decision, ".0f"),
    )


def main() -> None:
    started = time.perf_counter()
    results = [run(sc, experiments=n, seed=i) for i, (sc, n) in enumerate(default_scenarios())]
    line = "{:<7} {:<20} {:>11} {:>7} {:>8} {:>5} {:>15} {:>13}"
    print(line.format(*_COLUMNS))
    for r in results:
        print(line.format(*_row(r)))
    figures: dict[str, object] = {"policy": asdict(Policy()), "max_labels": results[0].max_labels}
    for r in results:
        figures.setdefault(r.design, {})[r.scenario] = {  # type: ignore[index]
            k: v for k, v in asdict(r).items() if k not in ("design", "scenario", "max_labels")
        }
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
