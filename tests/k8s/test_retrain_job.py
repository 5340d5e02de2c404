"""Issue 21: `kubectl create job --from=cronjob/...` on the test cluster runs a small retraining
with the published recipe (`--config default`, bounded by flags only), in the trainer image, and
registers the challenger in Redis.

The image is the real trainer image (torch, transformers, optimum); the data is the shared CFPB
file, mounted read-only; the package is written to a host folder so that the registered location
outlives the Job's pod.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from consumer.registry import Registry
from tests.k8s.conftest import CHART, ENV_FILE, ROOT, Cluster, release_values
from trainer.paths import DEFAULT_DATA

pytestmark = pytest.mark.k8s

# A smoke-sized run of the default recipe: the flags bound its size, every other setting is the
# recipe's.
SMALL = [
    "--max_steps",
    "4",
    "--limit_rows",
    "240",
    "--check_rows",
    "64",
    "--lexical_buckets",
    "4096",
]


def test_a_job_from_the_cronjob_trains_with_the_published_recipe_and_registers_a_challenger(
    cluster: Cluster, image_tag: str, pod_model_dir: Path, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:8]
    ns = f"ca-{unique}"
    out = ENV_FILE.parent / "runs" / unique
    out.mkdir(parents=True)
    out.chmod(0o777)  # the Job runs as uid 10001
    data = DEFAULT_DATA.parent
    volumes = [
        {"name": "data", "hostPath": {"path": str(data), "type": "Directory"}},
        {"name": "runs", "hostPath": {"path": str(out), "type": "Directory"}},
    ]
    mounts = [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "runs", "mountPath": "/runs"},
    ]
    args = ["--data", f"/data/{DEFAULT_DATA.name}", *SMALL, "--out", "/runs/run", "--register"]
    values = [
        *release_values(cluster, unique, image_tag, pod_model_dir),
        "--set", "consumer.replicas=1", "--set", "explainer.enabled=false",
        "--set", "promoter.enabled=false",
        "--set-json", f"trainer.args={json.dumps(args)}",
        "--set-json", f"trainer.extraVolumes={json.dumps(volumes)}",
        "--set-json", f"trainer.extraVolumeMounts={json.dumps(mounts)}",
        "--set-string", "trainer.env.HF_HUB_OFFLINE=1",
        "--set-string", "trainer.env.TRANSFORMERS_OFFLINE=1",
    ]  # fmt: skip
    cluster.run("kubectl", "create", "namespace", ns)
    cluster.run("kubectl", "label", "namespace", ns, "ca-test=true")
    try:
        cluster.run(
            "helm",
            "install",
            "ca",
            str(CHART),
            *values,
            "--namespace",
            ns,
            "--wait",
            "--timeout",
            "5m",
        )
        job = f"retrain-{unique}"
        cluster.run(
            "kubectl",
            "-n",
            ns,
            "create",
            "job",
            "--from=cronjob/ca-complaints-allocation-trainer",
            job,
        )
        t0 = time.monotonic()
        done = cluster.run(
            "kubectl", "-n", ns, "wait", f"job/{job}", "--for=condition=Complete", "--timeout=900s",
            check=False, timeout=960,
        )  # fmt: skip
        logs = cluster.run("kubectl", "-n", ns, "logs", f"job/{job}", "--tail=60", check=False)
        assert done.returncode == 0, (
            f"the Job did not complete:\n{logs.stdout[-5000:]}{logs.stderr[-2000:]}"
        )
        print(f"retraining Job: {time.monotonic() - t0:.0f}s")
        spec = cluster.kubectl_json("-n", ns, "get", "job", job)["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert spec["args"][:2] == ["--config", "default"], "the recipe `make train` runs"

        registered = json.loads(
            next(line for line in logs.stdout.splitlines() if '"registered"' in line)
        )
        client = redis.Redis.from_url(cluster.redis_url)
        try:
            entries = Registry(client, f"{unique}:").list()
        finally:
            client.close()
        (entry,) = [e for e in entries if e.ref == registered["registered"]["ref"]]
        assert "/runs/run" in json.dumps(entry.source), entry.source
        lineage = entry.manifest["lineage"]
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout
        assert lineage["code_commit"].removesuffix("-dirty") == head.strip(), (
            "the image's commit reaches the lineage"
        )
        assert lineage.get("lexical"), "wide and deep, as the published recipe trains it"
        assert (out / "run" / "package" / "manifest.json").exists()
    finally:
        cluster.run(
            "helm", "uninstall", "ca", "--namespace", ns, "--wait", "--timeout", "2m", check=False
        )
        cluster.run("kubectl", "delete", "namespace", ns, "--wait=false", check=False)
