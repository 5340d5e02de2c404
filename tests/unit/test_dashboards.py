"""Dashboards and alerts as code: committed files match the code, every query parses and reads only
metrics that consumer/metrics.py defines, and the alert rules pass promtool's unit tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip(
    "grafana_foundation_sdk", reason="pip install -e '.[dev]' (grafana-foundation-sdk)"
)

from dashboards import CHART_DIR, files, queries
from dashboards.__main__ import main
from dashboards.alerts import ALERTS
from dashboards.generate import metric_names

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (apt-get install prometheus)"
)


def defined_metrics() -> set[str]:
    """Names as queried: counters with _total, histograms by their base name."""
    from prometheus_client import CollectorRegistry

    from consumer.metrics import ConsumerMetrics, ExplainerMetrics, PromoterMetrics

    registry = CollectorRegistry()
    for cls in (ConsumerMetrics, PromoterMetrics, ExplainerMetrics):
        cls(registry)
    return {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}


def test_committed_files_match_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0, (
        "generated files drifted: run `python -m dashboards`\n" + capsys.readouterr().out
    )


def test_check_reports_drift(tmp_path: Path) -> None:
    for rel, text in files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert main(["--check", "--chart", str(tmp_path)]) == 0
    (tmp_path / "rules" / "alerts.yaml").write_text("groups: []\n")
    assert main(["--check", "--chart", str(tmp_path)]) == 1


def test_queries_read_only_defined_metrics() -> None:
    defined = defined_metrics()
    used: set[str] = set()
    for where, expr in queries():
        names = metric_names(expr)
        assert names, f"{where} reads no allocator metric"
        assert names <= defined, f"{where} reads undefined {sorted(names - defined)}"
        used |= names
    # Every metric is on a dashboard or in an alert, except these (why in the comment).
    unused = (
        defined
        - used
        # a distribution for ad-hoc analysis; agreement is the panel
        - {"allocator_shadow_confidence_delta"}
    )
    assert not unused, f"metrics nobody looks at: {sorted(unused)}"


def test_panels_are_complete() -> None:
    for path, text in files().items():
        if path.suffix != ".json":
            continue
        board = json.loads(text)
        assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace"}
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel.get("description"), f"{path}: {panel['title']} has no description"
            assert panel["datasource"]["uid"] == "${datasource}"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{path}: {panel['title']} repeats a refId"
            for t in panel["targets"]:
                assert 'namespace=~"$namespace"' in t["expr"], (
                    f"{panel['title']}: not filtered by namespace"
                )


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool has no expression checker: each query becomes a recording rule it must parse."""
    rules = [
        {"record": f"dashboard:query:{n}", "expr": expr} for n, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(CHART_DIR / "rules" / "alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_pass_promtool_unit_tests() -> None:
    tests = CHART_DIR / "rules" / "tests" / "alerts_test.yaml"
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(tests.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    defined = {
        r["alert"]
        for g in yaml.safe_load((CHART_DIR / "rules" / "alerts.yaml").read_text())["groups"]
        for r in g["rules"]
    }
    assert defined <= tested, f"alerts without a promtool test: {sorted(defined - tested)}"


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    """A firing case expects the alert (non-empty exp_alerts); a quiet case expects none at some
    eval_time. promtool checks that each case holds; this checks that both kinds exist."""
    tests = yaml.safe_load((CHART_DIR / "rules" / "tests" / "alerts_test.yaml").read_text())
    cases = [t for case in tests["tests"] for t in case.get("alert_rule_test", [])]
    firing = {t["alertname"] for t in cases if t.get("exp_alerts")}
    quiet = {t["alertname"] for t in cases if not t.get("exp_alerts")}
    names = {a.name for a in ALERTS}
    assert not names - firing, f"alerts never shown firing: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never shown quiet: {sorted(names - quiet)}"
    # a case for an alert that no longer exists is quiet whatever happens
    assert firing | quiet <= names, f"cases for unknown alerts: {sorted((firing | quiet) - names)}"


def test_every_alert_has_a_runbook_section() -> None:
    """The PrometheusRule links each alert to docs/operations.md#<lower-cased name>."""
    runbook = (CHART_DIR.parents[1] / "docs" / "operations.md").read_text()
    headings = {line[4:].strip() for line in runbook.splitlines() if line.startswith("### ")}
    alerts = {
        r["alert"]
        for r in yaml.safe_load((CHART_DIR / "rules" / "alerts.yaml").read_text())["groups"][0][
            "rules"
        ]
    }
    assert alerts <= headings, f"alerts without a runbook section: {sorted(alerts - headings)}"
