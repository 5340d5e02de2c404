"""Every class of the exception tree has a deliberate HTTP status in the explainer (httpx-style
boundary test)."""

from __future__ import annotations

import consumer.errors as ce
import explainer.errors as ee
from consumer.errors import AllocationError
from explainer.errors import http_error

EXPECTED = {
    ee.BadRequestError: (400, "bad_request"),
    ee.DecisionNotFoundError: (404, "decision_not_found"),
    ee.InputMismatchError: (409, "input_mismatch"),
    ee.ModelDigestMismatchError: (409, "model_digest_mismatch"),
    ee.InputGoneError: (410, "input_gone"),
    ee.ModelNotRegisteredError: (424, "model_not_registered"),
    ee.BusyError: (429, "busy"),
    ee.BudgetExceededError: (504, "budget_exceeded"),
    ce.UnknownModelError: (424, "model_not_registered"),
    ce.IntegrityError: (424, "model_integrity"),
    ce.PackageError: (424, "model_unavailable"),
    ce.StoreUnavailableError: (503, "store_unavailable"),
    ce.BrokerError: (503, "broker_unavailable"),
    ce.InferenceError: (500, "model_failure"),
    ce.DecodeError: (422, "invalid_record"),
    ce.SchemaError: (422, "invalid_record"),
    ce.InputError: (400, "bad_request"),
}


def _tree(cls: type[BaseException]) -> set[type[BaseException]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_tree(sub)}
    return out


def test_every_error_class_maps_on_purpose() -> None:
    for cls in sorted(_tree(AllocationError), key=lambda c: c.__name__):
        if not (cls.__module__.startswith("consumer.") or cls.__module__.startswith("explainer.")):
            continue  # other packages' trees (trainer) never reach the explainer
        status, code = http_error(cls("boom"))
        assert code != "internal", (
            f"{cls.__name__} falls through to 500 internal: map it in explainer.errors"
        )
        assert 400 <= status < 600
        if cls in EXPECTED:
            assert (status, code) == EXPECTED[cls], cls.__name__


def test_explainer_errors_stay_catchable_as_their_consumer_kin() -> None:
    assert issubclass(ee.ModelNotRegisteredError, ce.UnknownModelError)
    assert issubclass(ee.ModelDigestMismatchError, ce.IntegrityError)
    assert issubclass(ee.InputMismatchError, ce.ContractError)
    assert issubclass(ee.BadRequestError, ce.InputError)
    assert all(
        issubclass(c, ee.ExplainerError) for c in EXPECTED if c.__module__ == "explainer.errors"
    )


def test_unknown_exceptions_are_500_internal() -> None:
    assert http_error(AllocationError("x")) == (500, "internal")
    assert http_error(RuntimeError("x")) == (500, "internal")
