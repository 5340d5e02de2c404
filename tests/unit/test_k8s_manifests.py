"""The kustomize flavour (k8s/): every kustomization builds, every object is valid Kubernetes
(strict, offline schemas), pods are restricted, and the settings they pass are ones
consumer/settings.py knows.

Needs a ``kustomize`` binary (``scripts/install-tools.sh``); skipped without it.
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
K8S = ROOT / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
KUBE_VERSION = "1.31.0"
CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}
POD_KINDS = {"Deployment", "Job", "CronJob"}
Doc = dict[str, Any]


KUSTOMIZE = tool("kustomize")
pytestmark = pytest.mark.skipif(
    KUSTOMIZE is None, reason="no kustomize binary: run scripts/install-tools.sh"
)


@cache
def build(path: str) -> tuple[Doc, ...]:
    assert KUSTOMIZE is not None
    out = subprocess.run(
        [KUSTOMIZE, "build", str(K8S / path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_layout() -> None:
    assert KUSTOMIZATIONS == ["base", "jobs", "overlays/production", "overlays/production/jobs"]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_object_is_valid_kubernetes(path: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate"
    )
    for doc in build(path):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_pods_are_restricted_and_images_resolved(path: str) -> None:
    for doc in build(path):
        if doc["kind"] not in POD_KINDS:
            continue
        spec, where = pod_spec(doc), f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert c["image"].startswith("registry.example.com/"), (
                f"{where}: image placeholder not replaced"
            )
            mounts = {m["name"] for m in c["volumeMounts"]}
            assert mounts <= {v["name"] for v in spec["volumes"]}, (
                f"{where}: mount without a volume"
            )


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_labels_and_selectors(path: str) -> None:
    for doc in build(path):
        labels = doc["metadata"].get("labels", {})
        if (
            path.startswith("overlays")
            and doc["kind"] in {"PodDisruptionBudget", "NetworkPolicy"} | CRD_KINDS
        ):
            continue  # overlay-only objects carry no common labels (the base's label transformer)
        assert labels.get("app.kubernetes.io/part-of") == "complaints-allocation", doc["metadata"][
            "name"
        ]
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_settings_are_known() -> None:
    settings = pytest.importorskip("consumer.settings")
    known = {"ALLOCATOR_SECRETS_DIR"}
    for cls in (settings.ConsumerSettings, settings.PromoterSettings, settings.ExplainerSettings):
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            known |= {a.upper() for a in alias.choices} if alias else {f"ALLOCATOR_{name.upper()}"}
    for path in ("base", "overlays/production"):
        docs = build(path)
        names = set(named(docs, "ConfigMap", "complaints-allocation")["data"])
        for doc in docs:
            if doc["kind"] in POD_KINDS:
                names |= {e["name"] for c in pod_spec(doc)["containers"] for e in c.get("env", [])}
        unknown = {n for n in names if n.startswith(("ALLOCATOR_", "KAFKA_", "REDIS_"))} - known
        assert not unknown, f"{path}: settings do not know {sorted(unknown)}"


def test_production_overlay() -> None:
    docs = build("overlays/production")
    assert {d["metadata"].get("namespace") for d in docs} == {"complaints-allocation"}
    config = named(docs, "ConfigMap", "complaints-allocation")["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["ALLOCATOR_CREATE_TOPICS"] == "false", "merged, not replaced"
    consumer = named(docs, "Deployment", "complaints-allocation-consumer")
    assert "replicas" not in consumer["spec"], "KEDA owns the replica count"
    scaled = named(docs, "ScaledObject", "complaints-allocation-consumer")
    assert scaled["spec"]["maxReplicaCount"] <= int(config["ALLOCATOR_TOPIC_PARTITIONS"])
    explainer = pod_spec(named(docs, "Deployment", "complaints-allocation-explainer"))
    secrets = next(v for v in explainer["volumes"] if v["name"] == "secrets")
    assert {i["key"] for i in secrets["secret"]["items"]} == {
        "KAFKA_SASL_PASSWORD",
        "REDIS_PASSWORD",
        "ALLOCATOR_EXPLAINER_TOKEN",
    }
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            (c,) = pod_spec(doc)["containers"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/etc/complaints-allocation/kafka-tls" in mounts, doc["metadata"]["name"]


def test_jobs() -> None:
    for path in ("jobs", "overlays/production/jobs"):
        docs = build(path)
        assert {d["kind"] for d in docs} == {"Job"}
        topics = pod_spec(named(docs, "Job", "complaints-allocation-topics"))
        assert topics["containers"][0]["args"] == ["topics", "create"]
        retrain = pod_spec(named(docs, "Job", "complaints-allocation-retrain"))
        assert retrain["containers"][0]["command"] == ["python", "-m", "trainer", "train"]
    cron = named(build("base"), "CronJob", "complaints-allocation-trainer")
    assert cron["spec"]["suspend"] is True
    # The plain retrain Job and the CronJob template run the same pod, with the published recipe.
    job_pod = pod_spec(named(build("jobs"), "Job", "complaints-allocation-retrain"))
    (job_container,) = job_pod["containers"]
    assert job_container["args"] == ["--config", "default"]
    assert pod_spec(cron)["containers"] == [job_container]
    assert pod_spec(cron)["volumes"] == job_pod["volumes"]
