"""Issue 21: the chart's pods on a real cluster. Real CFPB complaints stream through two consumer
pods into ``allocations`` exactly once, across a ``helm upgrade`` that rolls the pods and a pod
deleted mid-stream."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import pytest

from tests.flow import Feeder, real_complaints
from tests.k8s.conftest import CHART, Release, image_ref
from tests.procs import read_all, wait_count

pytestmark = pytest.mark.k8s


def _ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def _wait(what: str, check, timeout: float = 240) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(1)


def test_every_component_becomes_ready_through_its_probes(release: Release) -> None:
    for component, replicas in (("consumer", 2), ("promoter", 1), ("explainer", 1)):
        pods = release.pods(component)
        assert len(pods) == replicas, (component, [p["metadata"]["name"] for p in pods])
        assert all(_ready(p) for p in pods), (component, release.logs(component)[-3000:])
        spec = pods[0]["spec"]["containers"][0]
        assert spec.get("readinessProbe") and spec.get("livenessProbe"), component
        assert pods[0]["spec"]["securityContext"]["runAsUser"] == 10001
    # PDB and NetworkPolicy are on by default.
    kinds = release.kubectl("get", "pdb,networkpolicy", "-o", "name").stdout.split()
    assert any(k.startswith("poddisruptionbudget") for k in kinds), kinds
    assert any(k.startswith("networkpolicy") for k in kinds), kinds


def test_complaints_stream_exactly_once_through_an_upgrade_and_a_deleted_pod(
    release: Release,
) -> None:
    cluster = release.cluster
    docs = real_complaints(900)
    items = [(d["complaint_id"].encode(), json.dumps(d).encode()) for d in docs]
    feeder = Feeder(cluster.kafka, release.topics["complaints"], items, rate=15)
    feeder.start()
    try:
        _wait("a third of the complaints sent", lambda: feeder.sent >= len(items) // 3, timeout=120)
        # A rolling update mid-stream to a new image tag (the same image tagged again in the node's
        # containerd, as a release pipeline would push one) rolls both pods.
        before = {p["metadata"]["name"] for p in release.pods("consumer")}
        old = image_ref("consumer")
        new_tag = f"{old.rsplit(':', 1)[1]}-next"
        ctr = [
            "ctr",
            "--address",
            cluster.env["K8S_CONTAINERD_SOCK"],
            "-n",
            "k8s.io",
            "images",
            "tag",
            "--force",
        ]
        subprocess.run(
            [*ctr, old, f"{old.rsplit(':', 1)[0]}:{new_tag}"], check=True, capture_output=True
        )
        release.helm(
            "upgrade", release.name, str(CHART), *release.values,
            "--set-string", f"image.tag={new_tag}", "--wait", "--timeout", "6m",
        )  # fmt: skip
        release.wait_rolled_out("ca-complaints-allocation-consumer")
        after = release.pods("consumer")
        assert not before & {p["metadata"]["name"] for p in after}, (
            "helm upgrade replaced every consumer pod"
        )
        assert {p["spec"]["containers"][0]["image"].rsplit(":", 1)[1] for p in after} == {new_tag}
        after_names = {p["metadata"]["name"] for p in after}
        # A pod deleted mid-stream is replaced by its Deployment.
        _wait("two thirds sent", lambda: feeder.sent >= 2 * len(items) // 3, timeout=180)
        victim = sorted(after_names)[0]
        release.kubectl("delete", "pod", victim, "--wait=false")
        _wait(
            "the deleted pod replaced",
            lambda: (
                (pods := release.pods("consumer"))
                and len([p for p in pods if _ready(p) and p["metadata"]["name"] != victim]) == 2
            ),
        )
        feeder.join(180)
        assert feeder.sent == len(items)
        counts = wait_count(cluster.kafka, [release.topics["allocations"]], len(docs), timeout=240)
        assert counts[release.topics["allocations"]] >= len(docs), (
            counts,
            release.logs("consumer")[-4000:],
        )
    finally:
        feeder.join(5)

    allocations = [
        json.loads(r.value) for r in read_all(cluster.kafka, release.topics["allocations"])
    ]
    per_id = Counter(a["complaint_id"] for a in allocations)
    assert set(per_id) == {d["complaint_id"] for d in docs}, "0 lost"
    assert per_id.most_common(1)[0][1] == 1, "0 duplicated"
    assert len({a["decision_id"] for a in allocations}) == len(allocations)
    assert not read_all(cluster.kafka, release.topics["dlq"], idle_ms=1000), (
        "no valid complaint went to the DLQ"
    )


def test_helm_test_passes(release: Release) -> None:
    out = release.helm("test", release.name, "--logs", "--timeout", "4m")
    assert "Phase:          Succeeded" in out.stdout, out.stdout


def test_turning_autoscaling_on_keeps_the_running_replicas(release: Release) -> None:
    deployment = "ca-complaints-allocation-consumer"
    release.helm(
        "upgrade", release.name, str(CHART), *release.values,
        "--set", "autoscaling.hpa.enabled=true", "--set", "autoscaling.hpa.maxReplicas=4",
        "--wait", "--timeout", "4m",
    )  # fmt: skip
    spec = release.cluster.kubectl_json(
        "--namespace", release.namespace, "get", "deployment", deployment
    )["spec"]
    assert spec["replicas"] == 2, (
        "the live count is kept until the autoscaler decides (not reset to 1)"
    )
    assert release.kubectl("get", "hpa", deployment, "-o", "name").stdout.strip()
