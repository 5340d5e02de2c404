"""SHAP values on a tiny model: additive in probability space, on exactly what the consumer scored,
bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumer.contracts.messages import Complaint
from consumer.inference import Encoded
from consumer.package import load_package
from explainer.attribution import Masking
from explainer.errors import BadRequestError, BudgetExceededError
from explainer.model_cache import LoadedModel, load_model
from explainer.report import ADDITIVITY_TOLERANCE
from explainer.sources import MemoryRecords
from explainer.testing import decide

TEXT = (
    "I was charged a late fee on my credit card even though I paid on time. The bank refused to "
    "refund it "
    "and my credit report now shows a late payment."
)
LONG = (
    "My mortgage servicer lost my payment and reported me late to the credit bureaus again. " * 12
)


@pytest.fixture(scope="module")
def loaded(tiny: Path) -> LoadedModel:
    return load_model(load_package(tiny), threads=1, sub_batch=8)


@pytest.mark.parametrize(
    ("task", "label"), [("team", "cards"), ("issue", "Other"), ("vulnerable", "yes")]
)
def test_values_add_up_to_the_model_probability(loaded: LoadedModel, task: str, label: str) -> None:
    att = loaded.shap.explain(TEXT, task, label, max_evals=200, budget_s=60)
    assert len(att.values) == len(att.view.ids)
    assert att.additivity_error <= ADDITIVITY_TOLERANCE
    assert (
        abs(att.base_value + sum(att.values) - att.output) < 1e-6
    )  # exact up to float rounding in practice
    assert all(v == 0 for v, s in zip(att.values, att.view.special, strict=True) if s), (
        "[CLS]/[SEP] never masked"
    )
    assert any(v != 0 for v in att.values)
    assert 0 < att.evals <= 200


def test_output_is_the_probability_the_consumer_decided_with(
    loaded: LoadedModel, tiny: Path
) -> None:
    package = load_package(tiny)
    allocation = decide(package, Complaint(complaint_id="c-1", text=TEXT), MemoryRecords())
    for task, pred in allocation.predictions.items():
        att = loaded.shap.explain(TEXT, task, pred.label, max_evals=60, budget_s=60)
        assert att.output == pytest.approx(pred.score, abs=1e-5), task
        direct = loaded.model.run([loaded.shap.tokens.encoder.encode([TEXT])[0]])[task]
        head = package.heads[task]
        assert att.output == pytest.approx(
            float(direct[0, head.labels.index(pred.label)]), abs=1e-6
        )


def test_long_text_explains_only_the_kept_tokens(loaded: LoadedModel) -> None:
    att = loaded.shap.explain(LONG, "team", "mortgages", max_evals=150, budget_s=60)
    assert att.view.truncated and len(att.values) == 128 and att.view.dropped
    assert att.additivity_error <= ADDITIVITY_TOLERANCE


def test_more_evaluations_refine_without_breaking_additivity(loaded: LoadedModel) -> None:
    coarse = loaded.shap.explain(TEXT, "team", "cards", max_evals=20, budget_s=60)
    fine = loaded.shap.explain(TEXT, "team", "cards", max_evals=400, budget_s=60)
    assert coarse.evals <= 20 < fine.evals <= 400
    assert coarse.base_value == pytest.approx(fine.base_value) and coarse.output == pytest.approx(
        fine.output
    )
    assert len(set(np.round(fine.values, 12))) > len(set(np.round(coarse.values, 12))), (
        "finer groups, more values"
    )
    assert (
        fine.additivity_error <= ADDITIVITY_TOLERANCE
        and coarse.additivity_error <= ADDITIVITY_TOLERANCE
    )


def test_unknown_task_or_label_is_a_bad_request(loaded: LoadedModel) -> None:
    with pytest.raises(BadRequestError, match="no task"):
        loaded.shap.explain(TEXT, "colour", "red", max_evals=50, budget_s=5)
    with pytest.raises(BadRequestError, match="no label"):
        loaded.shap.explain(TEXT, "team", "astronauts", max_evals=50, budget_s=5)


def test_time_budget_is_enforced(loaded: LoadedModel) -> None:
    with pytest.raises(BudgetExceededError, match="budget"):
        loaded.shap.explain(TEXT, "team", "cards", max_evals=500, budget_s=1e-9)


@pytest.mark.parametrize("masking", ["remove", "mask_token"])
def test_both_maskings_are_additive_and_have_their_baseline(tiny: Path, masking: Masking) -> None:
    loaded = load_model(load_package(tiny), threads=1, sub_batch=8, masking=masking)
    att = loaded.shap.explain(TEXT, "team", "cards", max_evals=120, budget_s=60)
    assert att.additivity_error <= ADDITIVITY_TOLERANCE
    assert ("removed" if masking == "remove" else "replaced by [MASK]") in att.masker
    view, column = att.view, loaded.model.heads["team"].labels.index("cards")
    if masking == "remove":
        empty = np.asarray(
            [view.ids[0], view.ids[-1]], dtype=np.int64
        )  # [CLS] [SEP]: the text without its tokens
    else:
        empty = np.asarray(
            [
                i if s else loaded.shap.tokens.mask_id
                for i, s in zip(view.ids, view.special, strict=True)
            ]
        )
    base = loaded.model.run([Encoded(empty, False)])["team"][0, column]
    assert att.base_value == pytest.approx(float(base), abs=1e-6)
