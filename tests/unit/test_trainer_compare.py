"""Champion vs challenger report on two tiny packages, and registration in a fake Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from consumer.package import load_package
from trainer.compare import compare, markdown

pytestmark = pytest.mark.train

ROWS = pd.DataFrame(
    {
        "text": [
            "My card was charged twice.",
            "A collector calls me daily.",
            "My mortgage payment was lost.",
            "Wrong account on my credit report.",
            "Bank closed my account.",
        ],
        "team": ["cards", "collections", "mortgages", "credit_bureau_disputes", "everyday_banking"],
        "issue": [
            "Fees or interest",
            "Communication tactics",
            "Trouble during payment process",
            "Incorrect information on your report",
            "Closing an account",
        ],
        "vulnerable": ["no", "yes", "no", "no", "yes"],
    }
)


def test_compare_reports_both_models_and_mcnemar(tiny: Path, tiny2: Path) -> None:
    result = compare(load_package(tiny), load_package(tiny2), ROWS, latency_rows=2)
    assert result["rows"] == 5
    for role in ("champion", "challenger"):
        m = result["models"][role]
        assert set(m["tasks"]) == {"team", "issue", "vulnerable"}
        assert {"recall", "precision"} <= set(m["tasks"]["vulnerable"])
        assert 0.0 <= m["tasks"]["team"]["accuracy"] <= 1.0
        assert m["latency_ms"]["p50"] > 0
    assert set(result["mcnemar"]) == {"team", "issue", "vulnerable"}
    assert all(0.0 <= r["p_value"] <= 1.0 for r in result["mcnemar"].values())
    assert result["models"]["champion"]["ref"] == "tiny-minilm@tiny-s0"
    text = markdown(result, "test")
    assert "McNemar" in text and "tiny-minilm@tiny-s1" in text
    json.dumps(result)  # the report is plain JSON


def test_register_is_idempotent(tiny: Path) -> None:
    import fakeredis

    from consumer.settings import CommonSettings
    from trainer.register import register

    client = fakeredis.FakeRedis()
    settings = CommonSettings(redis_prefix="t:")
    first = register(tiny, settings, client)
    assert first["ref"] == "tiny-minilm@tiny-s0"
    assert first["digest"] == load_package(tiny).digest
    assert register(tiny, settings, client)["registered_at"] == first["registered_at"]
