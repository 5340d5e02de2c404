from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from consumer.contracts.messages import Complaint, Source
from consumer.errors import InferenceError
from consumer.package import load_package
from consumer.plan import Plan, build_plan
from consumer.router import Item, Router, text_sha256
from consumer.strategy import Strategy, TaskPlan

TASKS = ("team", "issue", "vulnerable")
TEXTS = [
    "My credit report shows an account that is not mine and the bureau refuses to fix it.",
    "The servicer charged me fees I did not expect on my student loan.",
    "The bank closed my checking account.",
    "A debt collector calls me every day about a debt I never had. " * 80,  # long: truncated
]


def items(n: int) -> list[Item]:
    return [
        Item(
            Complaint(complaint_id=f"c{i}", text=TEXTS[i % len(TEXTS)]),
            Source(topic="complaints", partition=0, offset=i),
            0.0,
        )
        for i in range(n)
    ]


def plan_for(tiny: Path, tiny2: Path, **tasks: TaskPlan) -> Plan:
    a, b = load_package(tiny), load_package(tiny2)
    base = {t: TaskPlan("champion", a.ref) for t in TASKS}
    return build_plan(
        Strategy(7, {**base, **tasks}), {a.ref: a, b.ref: b}, None, threads=1, max_sub_batch=4
    )


class Counting:
    """Wraps a model to count how often each message is scored."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.rows = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def run(self, encoded: list) -> dict:  # type: ignore[type-arg]
        self.rows += len(encoded)
        return self.model.run(encoded)  # type: ignore[attr-defined, no-any-return]


def test_champion_allocations_carry_full_provenance(tiny: Path, tiny2: Path) -> None:
    plan = plan_for(tiny, tiny2)
    routed = Router(plan).route(items(8))
    assert len(routed.allocations) == 8 and not routed.failures and not routed.shadows
    item, alloc = routed.allocations[3]
    assert alloc.strategy.version == 7
    assert alloc.input_sha256 == text_sha256(item.complaint.text)
    assert alloc.source.offset == 3
    assert alloc.predictions["team"].model.sha256 == load_package(tiny).digest
    assert alloc.predictions["team"].truncated is True, "the long text must be marked truncated"
    assert routed.allocations[0][1].predictions["team"].truncated is False
    assert {p.arm for _, a in routed.allocations for p in a.predictions.values()} == {"champion"}
    assert alloc.journey == ("vulnerable" if alloc.vulnerable else "standard")


def test_canary_publishes_the_arm_model_and_each_model_runs_once_per_message(
    tiny: Path, tiny2: Path
) -> None:
    b = load_package(tiny2).ref
    a = load_package(tiny).ref
    canary = {t: TaskPlan("canary", a, b, weight=0.5, salt="s") for t in ("team", "issue")}
    plan = plan_for(tiny, tiny2, **canary)
    counted = {ref: Counting(m) for ref, m in plan.models.items()}
    plan = dataclasses.replace(plan, models=counted)  # type: ignore[arg-type]
    routed = Router(plan).route(items(40))
    arms = Counter(a.predictions["team"].arm for _, a in routed.allocations)
    assert arms["canary"] > 5 and arms["champion"] > 5
    for _, alloc in routed.allocations:
        for task in ("team", "issue"):
            p = alloc.predictions[task]
            assert p.model.version == ("tiny-s1" if p.arm == "canary" else "tiny-s0")
            assert p.arm == alloc.predictions["team"].arm, (
                "one salt: a complaint has one arm in every task"
            )
    # champion serves vulnerable for every message, so it runs 40 times; the challenger only on its
    # arm
    assert counted[a].rows == 40
    assert counted[b].rows == arms["canary"]


def test_shadow_scores_but_never_publishes(tiny: Path, tiny2: Path) -> None:
    a, b = load_package(tiny).ref, load_package(tiny2).ref
    plan = plan_for(tiny, tiny2, team=TaskPlan("shadow", a, b, sample=1.0, salt="s"))
    routed = Router(plan).route(items(6))
    assert len(routed.shadows) == 6
    for (_, alloc), shadow in zip(routed.allocations, routed.shadows, strict=True):
        assert alloc.predictions["team"].model.version == "tiny-s0"
        assert shadow.predictions["team"].model.version == "tiny-s1"
        assert shadow.predictions["team"].arm == "shadow"
        assert shadow.agreement["team"] == (
            shadow.predictions["team"].label == alloc.predictions["team"].label
        )
        assert shadow.decision_id == alloc.decision_id


def test_guardrail_champion_flag_sends_to_vulnerable_journey(tiny: Path, tiny2: Path) -> None:
    a, b = load_package(tiny).ref, load_package(tiny2).ref
    plan = plan_for(tiny, tiny2, vulnerable=TaskPlan("canary", a, b, weight=1.0, salt="s"))
    champ, chall = plan.models[a], plan.models[b]
    object.__setattr__(
        champ,
        "heads",
        {
            **champ.heads,
            "vulnerable": dataclasses.replace(champ.heads["vulnerable"], threshold=0.0),
        },
    )
    object.__setattr__(
        chall,
        "heads",
        {
            **chall.heads,
            "vulnerable": dataclasses.replace(chall.heads["vulnerable"], threshold=1.01),
        },
    )
    routed = Router(plan).route(items(5))
    for _, alloc in routed.allocations:
        assert alloc.predictions["vulnerable"].arm == "canary"
        assert alloc.vulnerable is False
        assert alloc.journey == "vulnerable"
        assert "vulnerable_guardrail" in alloc.review_reasons
        assert alloc.vulnerable_signals == ("champion_guardrail",)


def test_low_confidence_goes_to_review(tiny: Path, tiny2: Path) -> None:
    plan = plan_for(tiny, tiny2)
    model = plan.models[load_package(tiny).ref]
    object.__setattr__(
        model,
        "heads",
        {**model.heads, "team": dataclasses.replace(model.heads["team"], review_threshold=1.0)},
    )
    routed = Router(plan).route(items(3))
    assert all(
        a.needs_review and "team_low_confidence" in a.review_reasons for _, a in routed.allocations
    )


def _with_heads(plan: Plan, ref: str, **changes: dict[str, object]) -> None:
    model = plan.models[ref]
    heads = {t: dataclasses.replace(h, **changes.get(t, {})) for t, h in model.heads.items()}
    object.__setattr__(model, "heads", heads)


def test_each_head_says_whether_it_was_automated_and_why(tiny: Path, tiny2: Path) -> None:
    plan = plan_for(tiny, tiny2)
    ref = load_package(tiny).ref
    _with_heads(
        plan,
        ref,
        team={"review_threshold": 0.0, "guarantee_met": True},
        issue={"review_threshold": 0.5, "guarantee_met": False},
    )
    routed = Router(plan).route(items(4))
    for _, a in routed.allocations:
        assert set(a.routing) == {"team", "issue"}  # multiclass heads only
        assert a.routing["team"].model_dump() == {
            "decision": "auto",
            "reason": "confident",
            "threshold": 0.0,
        }
        # a head whose manifest found no share it could automate never decides alone
        assert a.routing["issue"].decision == "review"
        assert a.routing["issue"].reason == "no_guarantee"
        assert a.needs_review and a.review_reasons[0] == "issue_no_guarantee"
    _with_heads(plan, ref, issue={"review_threshold": 0.0, "guarantee_met": True})
    assert not any(a.needs_review for _, a in Router(plan).route(items(4)).allocations)


def _complaint(i: int, text: str, **customer: object) -> Item:
    doc: dict[str, object] = {"complaint_id": f"v{i}", "text": text}
    if customer:
        doc["customer"] = customer
    doc["received_at"] = "2026-06-01T09:00:00Z"
    return Item(Complaint.model_validate(doc), Source(topic="t", partition=0, offset=i), 0.0)


@pytest.mark.parametrize(
    ("text", "customer", "signals"),
    [
        ("The bank closed my checking account.", {}, ()),
        ("The bank closed my checking account.", {"vulnerable": True}, ("customer_flag",)),
        ("The bank closed my checking account.", {"age": 62}, ("customer_age",)),
        ("The bank closed my checking account.", {"age": 61}, ()),
        # 62 on the day the complaint was received, not on the day it is allocated
        (
            "The bank closed my checking account.",
            {"date_of_birth": "1964-06-01"},
            ("customer_age",),
        ),
        ("The bank closed my checking account.", {"date_of_birth": "1964-06-02"}, ()),
        (
            "The bank closed my checking account.",
            {"military_status": "veteran"},
            ("customer_military",),
        ),
        ("The bank closed my checking account.", {"military_status": "none"}, ()),
        (
            "As a veteran on a fixed income I was charged twice.",
            {},
            ("keyword_service", "keyword_age"),
        ),
        ("I am 74 and the bank closed my account.", {"vulnerable": False}, ("keyword_age",)),
    ],
)
def test_any_signal_sends_the_complaint_to_the_vulnerable_journey(
    tiny: Path, tiny2: Path, text: str, customer: dict[str, object], signals: tuple[str, ...]
) -> None:
    plan = plan_for(tiny, tiny2)
    _with_heads(
        plan, load_package(tiny).ref, vulnerable={"threshold": 1.01}
    )  # the model never flags
    [(_, a)] = Router(plan).route([_complaint(1, text, **customer)]).allocations
    assert a.vulnerable_signals == signals
    assert a.vulnerable is bool(signals)
    assert a.journey == ("vulnerable" if signals else "standard")
    assert a.predictions["vulnerable"].label == "no"  # the model's own flag is left as it said


def test_the_models_flag_is_a_signal_of_its_own(tiny: Path, tiny2: Path) -> None:
    plan = plan_for(tiny, tiny2)
    _with_heads(plan, load_package(tiny).ref, vulnerable={"threshold": 0.0})
    [(_, a)] = Router(plan).route([_complaint(1, "I was charged twice.", age=70)]).allocations
    assert a.vulnerable_signals == ("customer_age", "model")


def test_model_failure_is_isolated_to_its_message(
    tiny: Path, tiny2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_for(tiny, tiny2)
    model = next(iter(plan.models.values()))
    real = model.run
    poison = len(model_encoder_ids(plan, TEXTS[2]))

    def flaky(encoded: list) -> dict:  # type: ignore[type-arg]
        if any(len(e.ids) == poison for e in encoded):
            raise InferenceError("boom")
        return real(encoded)

    monkeypatch.setattr(model, "run", flaky)
    routed = Router(plan).route(items(8))
    failed = {it.complaint.complaint_id for it, _ in routed.failures}
    assert failed == {"c2", "c6"}
    assert len(routed.allocations) == 6


def model_encoder_ids(plan: Plan, text: str) -> list[int]:
    enc = next(iter(plan.encoders.values()))
    return list(enc.encode([text])[0].ids)
