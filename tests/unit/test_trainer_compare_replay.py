"""``trainer compare`` with a replay's JSON lines as one side: the replayed decisions of a model
give the report that scoring the model itself gives, on the rows the replay covers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from consumer.contracts.messages import Complaint, Source, dump
from consumer.package import load_package
from consumer.plan import build_plan
from consumer.replay import model_strategy
from consumer.router import Item, Router
from trainer.compare import compare, markdown
from trainer.errors import DataError
from trainer.replayed import load_replayed

pytestmark = pytest.mark.train

ROWS = pd.DataFrame(
    {
        "complaint_id": ["1001", "1002", "1003", "1004", "1005", "1006"],
        "text": [
            "My card was charged twice.",
            "A collector calls me daily.",
            "My mortgage payment was lost.",
            "Wrong account on my credit report.",
            "Bank closed my account.",
            "The lender added fees I never agreed to.",
        ],
        "team": [
            "cards",
            "collections",
            "mortgages",
            "credit_bureau_disputes",
            "everyday_banking",
            "cards",
        ],
        "issue": [
            "Fees or interest",
            "Communication tactics",
            "Trouble during payment process",
            "Incorrect information on your report",
            "Closing an account",
            "",  # no issue label: the row counts for the other tasks only
        ],
        "vulnerable": ["no", "yes", "no", "no", "yes", "no"],
    }
)


def replay_jsonl(package: Path, out: Path, rows: pd.DataFrame) -> Path:
    """What ``allocator replay --model <package> --jsonl out`` writes for these complaints."""
    pkg = load_package(package)
    plan = build_plan(model_strategy(pkg.ref, pkg.heads), {pkg.ref: pkg}, None, 1, 1)
    items = [
        Item(Complaint(complaint_id=cid, text=text), Source(topic="c", partition=0, offset=i), 0.0)
        for i, (cid, text) in enumerate(zip(rows["complaint_id"], rows["text"], strict=True))
    ]
    routed = Router(plan).route(items)
    out.write_text("".join(dump(a).decode() + "\n" for _, a in routed.allocations))
    return out


def test_replayed_decisions_report_as_the_model_that_made_them(
    tiny: Path, tiny2: Path, tmp_path: Path
) -> None:
    side = load_replayed(replay_jsonl(tiny2, tmp_path / "r.jsonl", ROWS))
    scored = compare(load_package(tiny), load_package(tiny2), ROWS, latency_rows=2)
    replay = compare(load_package(tiny), side, ROWS, latency_rows=2)
    got, want = replay["models"]["challenger"], scored["models"]["challenger"]
    assert got["ref"] == want["ref"] == "tiny-minilm@tiny-s1" and got["digest"] == want["digest"]
    assert got["tasks"] == want["tasks"]
    assert replay["mcnemar"] == scored["mcnemar"]
    assert "latency_ms" not in got and got["replay"].endswith("r.jsonl")
    text = markdown(replay, "test")
    assert "| p50 | " in text and " | - |" in text and "decisions replayed in `" in text
    json.dumps(replay)


def test_only_rows_the_replay_covers_are_compared(tiny: Path, tmp_path: Path) -> None:
    side = load_replayed(replay_jsonl(tiny, tmp_path / "r.jsonl", ROWS.iloc[:4]))
    result = compare(load_package(tiny), side, ROWS, latency_rows=1)
    assert result["rows"] == 4 and result["rows_without_replay"] == 2
    # the same model on both sides: replayed decisions equal scored ones
    assert all(r["only_a_correct"] == r["only_b_correct"] == 0 for r in result["mcnemar"].values())
    with pytest.raises(DataError, match="no row of the data has a replayed decision"):
        compare(load_package(tiny), side, ROWS.iloc[4:], latency_rows=1)


def test_a_line_that_is_not_an_allocation_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "complaint/v1"}\n')
    with pytest.raises(DataError, match="line 1 is not an allocation/v1 document"):
        load_replayed(bad)
