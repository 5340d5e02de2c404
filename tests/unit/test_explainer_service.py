"""One request end to end without services: the exact artifact, the exact input, refusals, the
cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from consumer.contracts.messages import Allocation
from consumer.errors import IntegrityError
from explainer.errors import (
    BadRequestError,
    DecisionNotFoundError,
    InputGoneError,
    InputMismatchError,
    ModelDigestMismatchError,
    ModelNotRegisteredError,
    http_error,
)
from explainer.index import DecisionIndex
from explainer.testing import MemoryWorld

TEXT = (
    "The debt collector keeps calling me at work about a debt I do not owe, "
    "and threatened to sue me."
)
OTHER = "My bank closed my checking account without notice and kept my money."


class World(MemoryWorld):
    def decide(self, text: str = TEXT, complaint_id: str = "c-1") -> Allocation:
        return super().decide(text, complaint_id)


@pytest.fixture
def world(tiny: Path) -> World:
    return World(tiny)


def test_explains_the_decided_label_with_the_recorded_artifact(world: World) -> None:
    allocation = world.decide()
    found = world.service.find(allocation.decision_id)
    assert found == allocation
    doc, hit = world.service.explain(found)
    pred = allocation.predictions["team"]
    assert not hit and doc["task"] == "team" and doc["label"] == pred.label
    assert doc["model"]["sha256"] == pred.model.sha256 == world.package.digest
    assert doc["strategy"]["version"] == allocation.strategy.version
    assert doc["decision_id"] == allocation.decision_id and doc["text_from"] == "kafka"
    assert doc["additivity"]["ok"] and doc["reproduction"]["ok"]
    assert doc["base_value"] + sum(doc["values"]) == pytest.approx(doc["output"], abs=1e-4)
    assert len(doc["tokens"]) == len(doc["offsets"]) == len(doc["values"])
    assert "[CLS]" not in doc["tokens"] and "[SEP]" not in doc["tokens"]


def test_task_and_label_can_be_chosen(world: World) -> None:
    allocation = world.decide()
    doc, _ = world.service.explain(allocation, "vulnerable", "yes")
    assert (doc["task"], doc["label"]) == ("vulnerable", "yes")
    with pytest.raises(BadRequestError, match="no prediction for task"):
        world.service.explain(allocation, "colour")
    with pytest.raises(BadRequestError, match="no label"):
        world.service.explain(allocation, "team", "astronauts")


def test_results_are_cached_per_decision_task_label_and_input(world: World) -> None:
    allocation = world.decide()
    first, hit1 = world.service.explain(allocation, "team")
    again, hit2 = world.service.explain(allocation, "team")
    assert (hit1, hit2) == (False, True) and again is first
    _, hit3 = world.service.explain(
        allocation, "team", "cards" if first["label"] != "cards" else "mortgages"
    )
    assert not hit3
    # a POSTed record reusing the decision id for another input never reads the cached result
    forged = allocation.model_copy(update={"input_sha256": "0" * 64})
    with pytest.raises(InputMismatchError):
        world.service.explain(forged, "team", text=TEXT)


def test_text_in_the_request_is_checked_against_input_sha256(world: World) -> None:
    allocation = world.decide()
    doc, _ = world.service.explain(allocation, text=TEXT)
    assert doc["text_from"] == "request" and doc["text"] == TEXT
    with pytest.raises(InputMismatchError, match="sha256") as err:
        world.service.explain(allocation, "issue", text=TEXT + " ")
    assert http_error(err.value) == (409, "input_mismatch")


def test_source_record_that_is_another_complaint_is_refused(world: World) -> None:
    allocation = world.decide()
    other = world.decide(OTHER, "c-2")
    moved = allocation.model_copy(update={"source": other.source})
    with pytest.raises(InputMismatchError, match="is complaint c-2"):
        world.service.explain(moved)


def test_input_no_longer_retained_is_410(world: World) -> None:
    allocation = world.decide()
    world.records.retain_from("complaints", 0, allocation.source.offset + 1)
    with pytest.raises(InputGoneError) as err:
        world.service.explain(allocation)
    assert http_error(err.value) == (410, "input_gone")
    doc, _ = world.service.explain(allocation, text=TEXT)  # the text in the request still works
    assert doc["additivity"]["ok"]


def test_unknown_decision_is_404(world: World) -> None:
    with pytest.raises(DecisionNotFoundError) as err:
        world.service.find("f" * 32)
    assert http_error(err.value) == (404, "decision_not_found")


def test_model_not_in_registry_is_424(tiny: Path) -> None:
    world = World(tiny, register=False)
    allocation = world.decide()
    with pytest.raises(ModelNotRegisteredError, match="not in the registry") as err:
        world.service.explain(allocation)
    assert http_error(err.value) == (424, "model_not_registered")


def test_registered_digest_differing_from_the_decisions_is_409(world: World) -> None:
    allocation = world.decide()
    pred = allocation.predictions["team"]
    other_model = pred.model.model_copy(update={"sha256": "a" * 64})
    forged = allocation.model_copy(
        update={
            "predictions": {
                **allocation.predictions,
                "team": pred.model_copy(update={"model": other_model}),
            }
        }
    )
    with pytest.raises(ModelDigestMismatchError, match="not the same artifact") as err:
        world.service.explain(forged)
    assert http_error(err.value) == (409, "model_digest_mismatch")


def test_registered_package_changed_on_disk_is_refused(tiny: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny, tmp_path / "pkg")
    world = World(copy)
    allocation = world.decide()
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 1
    onnx.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        world.service.explain(allocation)
    assert http_error(err.value) == (424, "model_integrity")


def test_decision_index_is_bounded_by_size_and_age() -> None:
    index = DecisionIndex(max_entries=3, lookback_s=100)
    for i in range(5):
        index.put(f"d{i}", 0, i, timestamp_s=1000 + i)
    assert (
        len(index) == 3
        and index.get("d0", now=1001) is None
        and index.get("d4", now=1001) == (0, 4)
    )
    assert index.get("d2", now=1102.5) is None and index.get("d3", now=1102.5) == (0, 3)
    index.put("d3", 1, 9, timestamp_s=1200)  # redelivered: the latest record wins
    assert index.get("d3", now=1200) == (1, 9)
