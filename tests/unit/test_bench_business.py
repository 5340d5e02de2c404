"""The business case (bench.business) and the automation report's arithmetic (bench.automation):
every figure follows from a named input or a measurement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import business
from bench.automation import head_figures
from consumer.package import TaskHead


def _write(tmp_path: Path, full: float = 0.5) -> tuple[Path, Path]:
    automation = {
        "model": "m@1",
        "results": {
            "holdout": {
                "team": {"coverage": 0.8},
                "issue": {"coverage": 0.6},
                "fully_automatic": {"share": full},
            }
        },
    }
    throughput = {"e2e_per_s": 36.0, "cpus": 2, "p99_ms": 700.0}
    a, t = tmp_path / "a.txt", tmp_path / "t.txt"
    a.write_text("some table\n" + json.dumps(automation) + "\n")
    t.write_text("bench output\n" + json.dumps(throughput) + "\n")
    return a, t


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    a, t = _write(tmp_path)
    code = business.main(
        ["--automation", str(a), "--throughput", str(t), "--plot", str(tmp_path / "b.png"), *extra]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_the_figures_follow_from_the_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = _run(tmp_path, capsys)
    inputs, m = out["inputs"], out["measured"]
    assert m["e2e_per_s_per_core"] == 18.0 and m["p99_latency_s"] == 0.7
    assert (tmp_path / "b.png").stat().st_size > 0
    rows = {(r["complaints_per_day"], r["minutes_per_triage"]): r for r in out["scenarios"]}
    assert set(rows) == {(3000, 1), (3000, 3), (15000, 1), (15000, 3)}
    r = rows[(3000, 1)]
    rate = (8 * 30000 + 50000) / (8 * inputs["working_days_per_year"] * inputs["hours_per_day"])
    assert r["loaded_gbp_per_analyst_hour"] == pytest.approx(rate)
    assert r["human_triage_hours_per_day"] == pytest.approx(50.0)
    # no credit for partial automation by default: half the complaints need no analyst
    assert r["analyst_hours_saved_per_day"] == pytest.approx(25.0)
    assert r["analyst_cost_saved_per_day_gbp"] == pytest.approx(25.0 * rate)
    # 3k a day is far below two cores' capacity: the availability floor sizes the consumers
    assert r["consumer_vcpus"] == 2
    infra = (2 + 0.25 + 0.5) * 24 * 0.035 + 12.0 + 1.5 + 3.0
    assert r["infrastructure_per_day_gbp"] == pytest.approx(infra)
    assert r["infrastructure_per_1000_complaints_gbp"] == pytest.approx(infra / 3)
    assert r["time_saving_share"] == pytest.approx(1 - (0.5 * 60 + 0.5 * 0.7) / 60)
    assert r["cost_goal_met"] is (r["cost_saving_share"] >= 0.5)


def test_an_input_is_overridden_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _run(tmp_path, capsys)["scenarios"][0]
    out = _run(tmp_path, capsys, "--set", "partial_automation_time_share=0", "--set", "analysts=16")
    cheaper = out["scenarios"][0]
    # partial automation now saves the whole triage of the share automated in part (0.3 + 0.1)
    assert cheaper["analyst_hours_saved_per_day"] == pytest.approx(
        base["analyst_hours_saved_per_day"] / 0.5 * 0.9
    )
    assert cheaper["loaded_gbp_per_analyst_hour"] < base["loaded_gbp_per_analyst_hour"]
    # and allocates them as fast as the model does: only the 10% nobody automated waits for people
    assert cheaper["time_saving_share"] == pytest.approx(1 - (0.1 * 60 + 0.9 * 0.7) / 60)


def test_bad_inputs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, t = _write(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        business.main(["--automation", str(a), "--throughput", str(t), "--set", "salary=1"])
    assert exit_.value.code == 2
    assert "--set 'salary=1'" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("no json here\n")
    with pytest.raises(SystemExit):
        business.main(["--automation", str(empty), "--throughput", str(t)])
    assert "has no JSON line" in capsys.readouterr().err


def test_head_figures_count_the_automated_share_as_the_consumer_routes() -> None:
    head = TaskHead("team", "logits_team", ("a", "b"), "multiclass", review_threshold=0.7)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    f = head_figures(head, probs, pd_series(["a", "b", "a", ""]))
    assert f["coverage"] == 0.75  # rows 0, 1 and 3 reach 0.7; coverage needs no label
    assert f["accuracy_automated"] == 0.5 and f["automated_labelled"] == 2  # row 3 unlabelled
    assert f["accuracy_review"] == 1.0  # row 2, right
    unmet = TaskHead("team", "logits_team", ("a", "b"), "multiclass", 0.0, guarantee_met=False)
    assert head_figures(unmet, probs, pd_series(["a"] * 4))["coverage"] == 0.0


def pd_series(values: list[str]) -> pd.Series:
    return pd.Series(values)
