"""Typed, frozen settings built once per process from the environment (and Kubernetes secret files).

Kafka and Redis connection settings use their conventional names (``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL``, ...); everything else is prefixed ``ALLOCATOR_``. Nothing else in the code base reads
``os.environ``: build the object in the CLI entry point and pass it down.

Every field has a description (``tests/unit/test_settings.py`` checks it): it is the reference of
the setting, and every command's ``--help`` lists the ones it reads (``consumer.cli_help``).
Secrets (``KAFKA_SASL_PASSWORD``, ``REDIS_PASSWORD``, ``ALLOCATOR_EXPLAINER_TOKEN``) may also come
from files named like their variable in ``ALLOCATOR_SECRETS_DIR`` (a mounted Kubernetes Secret;
the environment wins, and any setting can come from a file that way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar, get_args

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.errors import ConfigError

DEFAULT_SECRETS_DIR = "/var/run/secrets/complaints-allocation"


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class CommonSettings(BaseSettings):
    """Connection and topic settings shared by every process."""

    model_config = SettingsConfigDict(env_prefix="ALLOCATOR_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=_alias("KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        validation_alias=_alias("KAFKA_SECURITY_PROTOCOL"),
        description="How clients talk to the brokers: TLS (SSL), SASL, both or neither.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None,
        validation_alias=_alias("KAFKA_SASL_MECHANISM"),
        description="SASL mechanism with a SASL_* protocol; unset: no SASL.",
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias=_alias("KAFKA_SASL_USERNAME"), description="SASL user name."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None,
        validation_alias=_alias("KAFKA_SASL_PASSWORD"),
        description="SASL password (or a file of that name in ALLOCATOR_SECRETS_DIR).",
    )
    kafka_ssl_cafile: str | None = Field(
        None,
        validation_alias=_alias("KAFKA_SSL_CAFILE"),
        description="PEM file of the CA that signed the brokers' certificates.",
    )
    kafka_ssl_certfile: str | None = Field(
        None,
        validation_alias=_alias("KAFKA_SSL_CERTFILE"),
        description="PEM client certificate, for brokers that require mutual TLS.",
    )
    kafka_ssl_keyfile: str | None = Field(
        None,
        validation_alias=_alias("KAFKA_SSL_KEYFILE"),
        description="PEM private key of the client certificate.",
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=_alias("REDIS_URL"),
        description="redis:// or rediss:// (TLS) URL, without the password.",
    )
    redis_password: SecretStr | None = Field(
        None,
        validation_alias=_alias("REDIS_PASSWORD"),
        description="Redis password (or a file of that name in ALLOCATOR_SECRETS_DIR).",
    )
    redis_ssl_ca_certs: str | None = Field(
        None,
        validation_alias=_alias("REDIS_SSL_CA_CERTS"),
        description="PEM file of the CA that signed Redis's certificate (rediss:// only).",
    )
    redis_prefix: str = Field("ca:", description="Prefix of every Redis key this deployment owns.")
    redis_timeout_s: float = Field(
        1.0, gt=0, description="Socket timeout; a slow Redis must not stall the loop."
    )

    topic_complaints: str = Field("complaints", description="Input: complaint/v1 records.")
    topic_allocations: str = Field(
        "allocations", description="Output the case system reads: allocation/v1 records."
    )
    topic_shadow: str = Field(
        "allocations.shadow", description="Shadow challengers' predictions (never published)."
    )
    topic_dlq: str = Field(
        "complaints.dlq", description="Records that could not be allocated, with dlq/v1 headers."
    )
    topic_feedback: str = Field(
        "complaints.feedback", description="Final human decisions: feedback/v1 records."
    )
    topic_partitions: int = Field(
        6, ge=1, description="Partitions for topics this process creates."
    )
    topic_replication: int = Field(
        1, ge=1, description="Replication factor for topics this process creates."
    )
    create_topics: bool = Field(True, description="Create missing topics at start-up.")

    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: any)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Threshold of the JSON log lines on stderr."
    )
    model_cache_dir: Path = Field(
        Path(".cache/models"), description="Where hub model packages are fetched."
    )

    def output_topics(self) -> dict[str, str]:
        """The topics this system writes for others to read, each with what it is: never the
        target of a replay or a redrive."""
        return {
            self.topic_allocations: "the allocations topic the case system reads "
            "(ALLOCATOR_TOPIC_ALLOCATIONS)",
            self.topic_shadow: "the shadow topic (ALLOCATOR_TOPIC_SHADOW)",
            self.topic_dlq: "the DLQ (ALLOCATOR_TOPIC_DLQ)",
            self.topic_feedback: "the feedback topic (ALLOCATOR_TOPIC_FEEDBACK)",
        }


class ConsumerSettings(CommonSettings):
    """Settings of ``allocator consume``."""

    consumer_group: str = Field(
        "complaints-allocation", description="Kafka consumer group every consumer pod joins."
    )
    instance_id: str = Field(
        # the pod name, plus the pid so that processes sharing a host never share a
        # transactional.id; in a container the pid is the same after a restart, so a restarted pod
        # fences its own zombie at once
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="Unique per live process, stable per pod; makes the transactional.id.",
    )
    batch_max_messages: int = Field(
        64, ge=1, le=10_000, description="Upper bound of one micro-batch."
    )
    batch_max_wait_ms: int = Field(
        100, ge=1, description="How long a poll waits to fill a micro-batch."
    )
    max_message_bytes: int = Field(
        262_144, ge=1024, description="Larger inputs go to the DLQ as oversized."
    )
    max_text_chars: int = Field(
        100_000, ge=1, description="Longer texts go to the DLQ as oversized."
    )
    transaction_timeout_ms: int = Field(
        30_000,
        ge=1000,
        description="An open transaction of a crashed pod blocks read_committed readers this long.",
    )
    model_dir: Path | None = Field(
        None,
        description="A model package folder to serve as champion when Redis holds no strategy.",
    )
    ort_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads; 0 = the container CPU limit."
    )
    max_sub_batch: int = Field(
        1,
        ge=1,
        le=256,
        description="Texts per onnxruntime call (same-length groups only; 1 is fastest on CPU).",
    )
    hub_offline: bool = Field(
        False, description="Resolve hf:// model refs from the local cache only."
    )
    strategy_poll_s: float = Field(
        1.0, gt=0, description="Fallback poll when no change announcement arrives."
    )
    drain_timeout_s: float = Field(
        8.0, gt=0, description="SIGTERM: finish the batch in flight within this."
    )
    breaker_failure_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Model-failure share of recent records that opens the circuit breaker.",
    )
    breaker_min_records: int = Field(
        10, ge=1, description="Scored records the breaker needs before it may open."
    )
    breaker_window: int = Field(
        200, ge=1, description="Recent scored records the failure share is computed over."
    )
    breaker_cooldown_s: float = Field(
        300.0, gt=0, description="Open this long before a trial batch on the same plan."
    )


class PromoterSettings(CommonSettings):
    """Settings of ``allocator promoter``."""

    promoter_group: str = Field(
        "complaints-allocation-promoter", description="Kafka consumer group of the promoter."
    )
    auto_apply: bool = Field(
        False, description="Write promote/rollback to the strategy; else recommend only."
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Error rate of the always-valid sequential test."
    )
    min_labels: int = Field(
        50, ge=1, description="No decision before this many labelled outcomes per arm."
    )
    join_ttl_s: int = Field(
        30 * 86_400, ge=60, description="How long allocations wait for their feedback."
    )
    promoter_canary_weight: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share a shadow challenger serves as canary when its shadow test promotes it.",
    )


class ExplainerSettings(CommonSettings):
    """Settings of ``allocator explain serve``."""

    explainer_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API (0: any).")
    explainer_token: SecretStr | None = Field(
        None, description="Bearer token; requests without it get 401."
    )
    explainer_max_evals: int = Field(
        300, ge=10, description="SHAP model evaluations per explanation."
    )
    explainer_budget_s: float = Field(30.0, gt=0, description="Time budget of one explanation.")
    explainer_concurrency: int = Field(
        2, ge=1, description="Explanations computed at once; others wait."
    )
    explainer_cache_size: int = Field(
        256, ge=0, description="Explanations kept in memory for repeated requests (0: none)."
    )


S = TypeVar("S", bound=CommonSettings)


def env_name(cls: type[CommonSettings], name: str) -> str:
    """The environment variable of field ``name``: its alias, else ``env_prefix`` + the name."""
    alias = cls.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def is_secret(field: FieldInfo) -> bool:
    """A credential: never printed (``SecretStr`` also keeps it out of reprs)."""
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


def _problem(cls: type[CommonSettings], error: ErrorDetails) -> str:
    """One refused value: ``VARIABLE (field): why (got 'value')``; never a secret's value."""
    loc = str(error["loc"][0]).lower() if error["loc"] else ""
    name = next((n for n in cls.model_fields if loc in (n, env_name(cls, n).lower())), None)
    if name is None:
        return f"{loc or cls.__name__}: {error['msg']}"
    got = "" if is_secret(cls.model_fields[name]) else f" (got {error['input']!r})"
    return f"{env_name(cls, name)} ({name}): {error['msg']}{got}"


def load(cls: type[S]) -> S:
    """Build settings once from the environment, reading secret files when their folder is
    mounted. Refused values are one ``ConfigError`` line naming each variable."""
    secrets_dir = os.environ.get("ALLOCATOR_SECRETS_DIR", DEFAULT_SECRETS_DIR)
    try:
        return cls(_secrets_dir=secrets_dir if os.path.isdir(secrets_dir) else None)
    except ValidationError as exc:
        problems = "; ".join(_problem(cls, e) for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid settings: {problems}") from exc
