"""Issue 21: every rendered chart scenario and kustomize build passes kubeconform -strict (KEDA and
prometheus-operator CRDs included) and a server-side dry run on the test cluster's apiserver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.conftest import ROOT, Cluster

pytestmark = pytest.mark.k8s
SCRIPT = ROOT / "scripts" / "validate_manifests.py"


def validate(*args: str, kubectl: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"KUBECTL": kubectl} if kubectl else {}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, **env},
    )  # fmt: skip


def test_every_scenario_is_valid_offline_and_accepted_by_the_apiserver(cluster: Cluster) -> None:
    out = validate(
        "--kubeconfig",
        cluster.env["KUBECONFIG"],
        kubectl=str(Path(cluster.env["K8S_BIN"]) / "kubectl"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    scenarios = {
        p.name for p in (ROOT / "helm" / "complaints-allocation" / "ci").glob("*-values.yaml")
    }
    assert {line.split(":")[0].removeprefix("chart ") for line in lines} >= scenarios
    assert len(lines) == len(scenarios) + 3, "and the three kustomize builds"
    for line in lines:
        assert "Invalid: 0, Errors: 0, Skipped: 0" in line, line
        done, total = line.rsplit("; ", 1)[1].split(" objects")[0].split(" of ")
        assert done == total, line


BAD_CORE = """apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replicas: 1
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, imagePullPolicy: Never, resoures: {}}]
"""
BAD_CRD = """apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  coolDownPeriod: 300
  triggers: [{type: kafka, metadata: {}}]
"""


@pytest.mark.parametrize(("doc", "field"), [(BAD_CORE, "resoures"), (BAD_CRD, "coolDownPeriod")])
def test_a_misspelt_field_fails_validation(tmp_path: Path, doc: str, field: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(doc)
    out = validate(str(f))
    assert out.returncode != 0
    assert field in out.stdout + out.stderr
