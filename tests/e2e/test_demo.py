"""Issues 9 and 23: the demo's flow in a reduced form (tiny models, a few hundred complaints) on the
real stack: champion, a bad release dead-lettered and redriven, shadow, canary, feedback into a
short retraining run whose challenger the promoter judges, with measured latency."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PHASES = (
    "champion only",
    "bad release",
    "fix and redrive",
    "shadow",
    "canary 20%",
    "feedback export and retrain",
    "retrained canary",
)


def test_quick_demo_runs_the_whole_lifecycle(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "CA_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "demo", "--quick", "--messages", "240", "--rate", "120"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:] + out[-3000:]
    for needed in (
        "Accuracy of the published decisions",
        "human team",
        "Promoter",
        "Why decision",
        "allocator strategy shadow",
        "allocator explain",
        "allocator dlq list --code model_failure --limit 3",
        "allocator dlq redrive --code model_failure --dry-run",
        "allocator promoter export --out",
        "python -m trainer train --config",
    ):
        assert needed in out, needed

    # the bad release: model failures dead-lettered, redriven after the fix, every one allocated;
    # the two records that are not JSON stay
    redriven = r"redrive --code model_failure: sent (\d+); redriven complaints allocated: "
    redrive = re.search(redriven + r"(\d+) of (\d+)", out)
    assert redrive, out[-3000:]
    sent, allocated, failed = map(int, redrive.groups())
    assert sent == failed == allocated > 0
    assert "STILL MISSING" not in out
    assert "the same redrive again would send 0" in out
    assert "left for a person: not_json 2" in out

    # feedback exported, a challenger retrained and registered, the promoter's decision on it
    exported = re.search(r"allocator promoter export: (\d+) joined feedback rows", out)
    assert exported and int(exported.group(1)) > 0
    # the bank's new complaints split by hash: the feedback trains the next model
    trained_on = re.search(r"by the trainer's split rule: test \d+, train (\d+), val \d+", out)
    assert trained_on and int(trained_on.group(1)) > 0, out[-3000:]
    registered = re.search(r"^(tiny-retrained@r-\w+) sha256:[0-9a-f]{64}$", out, re.MULTILINE)
    assert registered, out[-3000:]
    decisions = re.findall(r"^    (team|issue|vulnerable): (ROLLBACK|PROMOTE) \(applied", out, re.M)
    assert decisions, out[-3000:]

    # every phase timed, with latency measured by the demo (not histogram bucket bounds)
    for phase in PHASES:
        assert re.search(rf"^  {re.escape(phase)} +\d+\.\ds ", out, re.MULTILINE), phase
    latency = re.search(
        r"End-to-end latency over the whole run: p50 (\d+)ms, p99 (\d+)ms \((\d+)", out
    )
    assert latency, out[-3000:]
    p50, p99, n = map(int, latency.groups())
    assert 0 < p50 <= p99 < 60_000 and n > 240
    assert re.search(r"latency p50 +\d+ms p99 +\d+ms \(n=\d+, this phase\)", out)
