"""One exception tree for the whole project.

    AllocationError
    ├── ConfigError                 bad settings or CLI arguments
    ├── ContractError               a message breaks its contract; ``code`` is the DLQ reason
    │   ├── DecodeError             not UTF-8, not JSON, not an object, oversized
    │   └── SchemaError             unknown schema, schema violation, empty text
    ├── ModelError
    │   ├── PackageError            a model package is missing files or has a bad manifest
    │   │   │                       (``reason``: the label of allocator_model_load_failures_total)
    │   │   └── IntegrityError      a file's sha256 differs from the manifest
    │   └── InferenceError          onnxruntime failed on a batch or a message
    ├── RegistryError
    │   └── UnknownModelError       name@version is not registered
    ├── StrategyError
    │   ├── StrategyValidationError the document is refused; the last good one stays in force
    │   └── StrategyConflictError   compare-and-set lost: somebody wrote a newer version
    ├── StoreUnavailableError       Redis cannot be reached (pods keep serving)
    ├── BrokerError                 Kafka cannot be reached or refused a request
    └── InputError                  a CLI input file is missing or malformed (exit 2, no traceback)

Upstream errors (redis, kafka-python, onnxruntime) are mapped at one boundary each: see
``consumer.store.map_redis_errors`` and ``consumer.kafka.map_kafka_errors``.
"""

from __future__ import annotations


class AllocationError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AllocationError):
    pass


class ContractError(AllocationError):
    """A message that breaks its contract. ``code`` is a stable, bounded reason for DLQ headers and
    metrics."""

    code = "contract_violation"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class DecodeError(ContractError):
    code = "not_json"


class SchemaError(ContractError):
    code = "schema_violation"


class ModelError(AllocationError):
    pass


class PackageError(ModelError):
    """A package that cannot be served. ``reason`` is one of ``LOAD_FAILURE_REASONS``, for
    metrics."""

    reason = "unloadable"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class IntegrityError(PackageError):
    reason = "digest_mismatch"


class InferenceError(ModelError):
    code = "model_failure"


class RegistryError(AllocationError):
    pass


class UnknownModelError(RegistryError):
    pass


class StrategyError(AllocationError):
    pass


class StrategyValidationError(StrategyError):
    pass


class StrategyConflictError(StrategyError):
    pass


class StoreUnavailableError(AllocationError):
    pass


class BrokerError(AllocationError):
    pass


class InputError(AllocationError):
    pass


# Every DLQ reason code the consumer can emit; metrics use exactly this bounded set as label values.
DLQ_REASONS = (
    "not_utf8",
    "not_json",
    "not_object",
    "oversized",
    "unknown_schema",
    "schema_violation",
    "empty_text",
    "model_failure",
)

# Why a pod refused a model package (``PackageError.reason``; ``not_registered`` for a strategy
# naming a model the registry lacks): the bounded label set of allocator_model_load_failures_total.
LOAD_FAILURE_REASONS = (
    "digest_mismatch",  # a file, or the manifest, differs from its recorded sha256
    "missing_file",  # the manifest, or a file it lists, is not there
    "bad_manifest",  # not JSON, against the schema, or an inconsistent head
    "unloadable",  # onnxruntime or the tokenizer refuses it
    "fetch_failed",  # the hub download failed
    "not_registered",
)
