"""The Helm chart: lint and render every ci/*-values.yaml scenario, validate every object against
the Kubernetes schemas offline (kubernetes-validate ships them), and assert what every object owes:
restricted pod security, standard labels, names within 63 characters. What each feature renders:
test_helm_features.py.

Needs a ``helm`` binary (``scripts/install-tools.sh`` builds a pinned one); skipped without it.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "complaints-allocation"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.31.0"  # oldest Kubernetes we test against; kubernetes-validate has its schemas
POD_KINDS = {"Deployment", "Job", "CronJob"}
# CRDs have no schema in kubernetes-validate; they get structural assertions below instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
Doc = dict[str, Any]


HELM = tool("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: run scripts/install-tools.sh")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check, timeout=120)


@cache
def _render(values: tuple[str, ...], sets: tuple[str, ...], release: str) -> tuple[Doc, ...]:
    args = [
        "template",
        release,
        str(CHART),
        "--namespace",
        "triage",
        "--kube-version",
        KUBE_VERSION,
    ]
    for v in values:
        args += ["-f", str(CHART / "ci" / v)]
    for s in sets:
        args += ["--set", s]
    return tuple(d for d in yaml.safe_load_all(helm(*args).stdout) if d)


def render(*values: str, sets: tuple[str, ...] = (), release: str = "rel") -> list[Doc]:
    return list(_render(values, sets, release))


def render_error(*sets: str) -> str:
    args = ["template", "rel", str(CHART)] + [x for s in sets for x in ("--set", s)]
    result = helm(*args, check=False)
    assert result.returncode != 0, "rendering should have failed"
    return result.stderr


def find(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (
        f"expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]


def settings_map(docs: list[Doc]) -> dict[str, str]:
    """Data of the ConfigMap every process reads with envFrom."""
    (config,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and "KAFKA_BOOTSTRAP_SERVERS" in d.get("data", {})
    ]
    return dict(config["data"])


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


# --- lint and
# schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / scenario), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_kubernetes(scenario: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate"
    )
    for doc in render(scenario):
        if doc["kind"] in CRD_KINDS:
            continue
        try:  # strict: unknown fields are errors, not silently dropped by the API server
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def test_values_schema_refuses_unknown_and_invalid_values() -> None:
    assert "additional properties 'replicass'" in render_error("consumer.replicass=3")
    assert "mechanism" in render_error("kafka.sasl.mechanism=GSSAPI")
    assert "redis" in render_error("redis.url=http://redis:6379")


# --- security, labels, names ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_restricted(scenario: str) -> None:
    for doc in render(scenario):
        if doc["kind"] not in POD_KINDS:
            continue
        spec, where = pod_spec(doc), f"{doc['kind']}/{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "resources" in c and c["resources"]["requests"], where
            # A read-only root needs somewhere to write: /tmp is always an emptyDir.
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_standard_labels_and_short_names(scenario: str) -> None:
    for doc in render(scenario):
        meta, where = doc["metadata"], f"{doc['kind']}/{doc['metadata']['name']}"
        assert len(meta["name"]) <= 63, where
        labels = meta["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{where} lacks {key}"
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            template = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= template.items(), where
            assert "app.kubernetes.io/version" not in selector, (
                "selectors are immutable: no version in them"
            )


def test_long_release_names_are_cut_without_collisions() -> None:
    release = "a-long-release-name-for-the-bank-complaints-triage-53"  # helm allows 53
    docs = render("full-values.yaml", sets=("fullnameOverride=",), release=release)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert all(len(n) <= 63 for _, n in names)
    assert len(set(names)) == len(names), "two objects of one kind share a name"
    assert find(docs, "Deployment", "-consumer")["metadata"]["name"].endswith("-consumer")
