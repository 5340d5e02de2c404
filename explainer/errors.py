"""Errors of the explainer, grafted onto the project's one exception tree (``consumer.errors``).

    AllocationError
    └── ExplainerError                 ``status`` (HTTP) and ``code`` (stable reason) on every class
        ├── BadRequestError(InputError)           400 bad_request: unknown task or label, malformed
        │                                         body, query or decision id
        ├── UnauthorizedError                     401 unauthorized: no or wrong bearer token
        ├── DecisionNotFoundError                 404 decision_not_found: no allocation with this id
        ├── RouteNotFoundError                    404 not_found: no such route (or method)
        ├── InputMismatchError(ContractError)     409 input_mismatch: sha256(text) differs from
        │                                         input_sha256
        ├── ModelDigestMismatchError(IntegrityError)
        │                                         409 model_digest_mismatch: name@version is
        │                                         registered with another digest than the one that
        │                                         made the decision
        ├── InputGoneError                        410 input_gone: the source offset is no longer
        │                                         retained
        ├── ModelNotRegisteredError(UnknownModelError)
        │                                         424 model_not_registered: the decision's model is
        │                                         not in the registry
        ├── BusyError                             429 busy: every computation slot stayed taken
        │                                         (Retry-After)
        └── BudgetExceededError                   504 budget_exceeded: SHAP did not finish within
                                                  the time budget

``http_error`` is the one boundary where any error becomes an HTTP status and code (``error_body``
is the body that carries them); errors of the consumer tree that can surface here (Redis or Kafka
down, a registered package that fails verification) are mapped there too, and
``tests/unit/test_explainer_errors.py`` checks that every class of the tree has a deliberate
mapping.
"""

from __future__ import annotations

import json

from consumer.errors import (
    AllocationError,
    BrokerError,
    ConfigError,
    ContractError,
    InferenceError,
    InputError,
    IntegrityError,
    ModelError,
    PackageError,
    RegistryError,
    StoreUnavailableError,
    StrategyError,
    UnknownModelError,
)


class ExplainerError(AllocationError):
    """Root of the explainer's own errors."""

    status = 500
    code = "explainer_error"


class BadRequestError(ExplainerError, InputError):
    status, code = 400, "bad_request"


class UnauthorizedError(ExplainerError):
    status, code = 401, "unauthorized"


class DecisionNotFoundError(ExplainerError):
    status, code = 404, "decision_not_found"


class RouteNotFoundError(ExplainerError):
    status, code = 404, "not_found"


class InputMismatchError(ExplainerError, ContractError):
    status, code = 409, "input_mismatch"


class ModelDigestMismatchError(ExplainerError, IntegrityError):
    status, code = 409, "model_digest_mismatch"


class InputGoneError(ExplainerError):
    status, code = 410, "input_gone"


class ModelNotRegisteredError(ExplainerError, UnknownModelError):
    status, code = 424, "model_not_registered"


class BusyError(ExplainerError):
    status, code = 429, "busy"


class BudgetExceededError(ExplainerError):
    status, code = 504, "budget_exceeded"


# Most specific first: the first class an error is an instance of decides.
_UPSTREAM: tuple[tuple[type[Exception], int, str], ...] = (
    (ExplainerError, 0, ""),  # placeholder: explainer errors carry their own status and code
    (StoreUnavailableError, 503, "store_unavailable"),
    (BrokerError, 503, "broker_unavailable"),
    (UnknownModelError, 424, "model_not_registered"),
    (IntegrityError, 424, "model_integrity"),  # the registered package no longer verifies
    (PackageError, 424, "model_unavailable"),  # it cannot be fetched or loaded
    (InferenceError, 500, "model_failure"),
    (ModelError, 500, "model_error"),
    (
        ContractError,
        422,
        "invalid_record",
    ),  # the record at the coordinates is not a valid complaint
    (RegistryError, 500, "registry_error"),
    (StrategyError, 500, "strategy_error"),
    (ConfigError, 500, "config_error"),
    (InputError, 400, "bad_request"),
    (AllocationError, 500, "internal"),
)


def http_error(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and stable error code for ``exc``; anything unknown is a 500 ``internal``."""
    if isinstance(exc, ExplainerError):
        return exc.status, exc.code
    for cls, status, code in _UPSTREAM[1:]:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every refusal: ``{"error": code, "message": message}``."""
    return json.dumps({"error": code, "message": message}).encode()
