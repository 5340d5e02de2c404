"""Issue 9: the demo's flow in a reduced form (tiny models, a few hundred complaints) on the real
stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


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
    assert "240 allocations" in out
    assert (
        "strategy version 3: issue=canary, team=canary, vulnerable=canary" in out or "canary" in out
    )
    for needed in (
        "Accuracy of the published decisions",
        "human team",
        "Promoter",
        "Why decision",
        "allocator strategy shadow",
        "allocator explain",
    ):
        assert needed in out, needed
    assert "DLQ    0" in out
