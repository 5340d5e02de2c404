"""Settings: every field documented (the description is the setting's reference), and bad values
refused with a clear error."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.settings import (
    CommonSettings,
    ConsumerSettings,
    ExplainerSettings,
    PromoterSettings,
    load,
)

ALL = (CommonSettings, ConsumerSettings, PromoterSettings, ExplainerSettings)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_field_has_a_description(cls: type[CommonSettings]) -> None:
    undocumented = [name for name, f in cls.model_fields.items() if not f.description]
    assert not undocumented, f"{cls.__name__}: fields without a description: {undocumented}"


def test_a_bad_value_is_a_config_error_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOCATOR_BATCH_MAX_MESSAGES", "0")
    with pytest.raises(ConfigError, match="batch_max_messages"):
        load(ConsumerSettings)


def test_refused_values_are_one_line_naming_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOCATOR_METRICS_PORT", "abc")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError) as caught:
        load(CommonSettings)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid settings: ")
    assert "KAFKA_SECURITY_PROTOCOL (kafka_security_protocol): Input should be" in message
    assert "ALLOCATOR_METRICS_PORT (metrics_port): Input should be a valid integer" in message
    assert "(got 'abc')" in message
