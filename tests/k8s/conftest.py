"""The chart on a real single-node cluster (``scripts/k8s.sh up``; ``make test`` starts it).

The cluster's address book is ``.k8s/env`` (or ``K8S_ENV_FILE``): its kubeconfig, and the Kafka and
Redis that pods reach (``K8S_POD_*``) beside the host-side addresses the test itself uses
(``K8S_KAFKA_*``). Without it the tier is skipped, unless the run promised services
(``CA_REQUIRE_SERVICES=1``): then it fails.

Per test module: a namespace and topics of its own, and the chart installed from
``ci/k8s-values.yaml`` with the images ``scripts/images.sh`` built for this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _unavailable
from tests.tiny_packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "complaints-allocation"
ENV_FILE = Path(os.environ.get("K8S_ENV_FILE", ROOT / ".k8s" / "env"))

pytestmark = pytest.mark.k8s


@dataclass(frozen=True)
class Cluster:
    """Where the test cluster and the services its pods use are."""

    env: dict[str, str]

    @property
    def kafka(self) -> str:
        """Kafka as the test (on the host) reaches it."""
        return self.env["K8S_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def redis_url(self) -> str:
        return self.env["K8S_REDIS_URL"]

    @property
    def pod_kafka(self) -> str:
        """The same broker as pods reach it (its listener on the cluster bridge)."""
        return self.env["K8S_POD_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def pod_redis_url(self) -> str:
        return self.env["K8S_POD_REDIS_URL"]

    def run(
        self, tool: str, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl`` or ``helm`` against this cluster; a failure raises with both outputs."""
        exe = str(Path(self.env["K8S_BIN"]) / "kubectl") if tool == "kubectl" else tool
        env = {
            **os.environ,
            "KUBECONFIG": self.env["KUBECONFIG"],
            "HELM_CACHE_HOME": str(ENV_FILE.parent / "helm"),
        }
        out = subprocess.run(
            [exe, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} -> "
                f"{out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.run("kubectl", *args, "-o", "json").stdout)


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not ENV_FILE.exists():
        _unavailable(f"Kubernetes test cluster ({ENV_FILE}; `make k8s-up` starts one)")
    if shutil.which("helm") is None:
        _unavailable("helm (scripts/install-tools.sh)")
    c = Cluster(_read_env(ENV_FILE))
    ready = c.run(
        "kubectl",
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
    )
    assert ready.stdout.strip() == "True", f"the test cluster's node is not Ready: {ready.stdout!r}"
    return c


def image_ref(name: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "images.sh"), "ref", name],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def image_tag() -> str:
    """The tag scripts/images.sh gave this checkout's images (``make k8s-up`` builds and loads
    them)."""
    return image_ref("consumer").rsplit(":", 1)[1]


@pytest.fixture(scope="session")
def pod_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model package where pods can mount it (hostPath): readable by the pods' uid 10001."""
    src = tiny_package(tmp_path_factory.mktemp("models"), 0)
    dst = ENV_FILE.parent / "models" / f"tiny-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    for parent in (dst.parent, dst.parent.parent):
        parent.chmod(parent.stat().st_mode | 0o005)
    return dst


@dataclass
class Release:
    """One install of the chart in a namespace of its own, with topics of its own."""

    cluster: Cluster
    name: str
    namespace: str
    topics: dict[str, str]
    values: list[str] = field(default_factory=list)

    def helm(self, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
        return self.cluster.run("helm", *args, "--namespace", self.namespace, timeout=timeout)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.run("kubectl", "--namespace", self.namespace, *args, check=check)

    def pods(self, component: str) -> list[dict[str, Any]]:
        """The component's pods, less those already terminating."""
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        items: list[dict[str, Any]] = self.cluster.kubectl_json(
            "--namespace", self.namespace, "get", "pods", "-l", selector
        )["items"]
        return items

    def wait_rolled_out(self, deployment: str, timeout: int = 300) -> None:
        self.kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s")

    def logs(self, component: str) -> str:
        out = self.kubectl(
            "logs",
            "-l",
            f"app.kubernetes.io/component={component}",
            "--tail=200",
            "--prefix",
            check=False,
        )
        return out.stdout + out.stderr


def topic_names(unique: str) -> dict[str, str]:
    """The release's own topics, by the chart's kafka.topics keys."""
    return {k: f"{k}-{unique}" for k in ("complaints", "allocations", "shadow", "dlq", "feedback")}


def release_values(
    cluster: Cluster, unique: str, tag: str, model_dir: Path, extra: dict[str, str] | None = None
) -> list[str]:
    """``--set`` arguments binding ci/k8s-values.yaml to this run: addresses, topics, images,
    model."""
    topics = topic_names(unique)
    sets = {
        "image.tag": tag,
        "explainer.image.tag": tag,
        "trainer.image.tag": tag,
        "kafka.bootstrapServers": cluster.pod_kafka,
        "redis.url": cluster.pod_redis_url,
        "redis.prefix": f"{unique}:",
        "consumer.group": f"group-{unique}",
        **{f"kafka.topics.{k}": v for k, v in topics.items()},
        "consumer.env.ALLOCATOR_MODEL_DIR": "/models/tiny",
        "consumer.env.ALLOCATOR_TRANSACTION_TIMEOUT_MS": "10000",
        **(extra or {}),
    }
    volume = json.dumps(
        [{"name": "models", "hostPath": {"path": str(model_dir), "type": "Directory"}}]
    )
    mount = json.dumps([{"name": "models", "mountPath": "/models/tiny", "readOnly": True}])
    args = ["--values", str(CHART / "ci" / "k8s-values.yaml")]
    for k, v in sets.items():
        args += ["--set-string", f"{k}={v}"]
    args += [
        "--set",
        "kafka.partitions=4",
        "--set-json",
        f"consumer.extraVolumes={volume}",
        "--set-json",
        f"consumer.extraVolumeMounts={mount}",
    ]
    return args


@pytest.fixture(scope="module")
def release(cluster: Cluster, image_tag: str, pod_model_dir: Path) -> Iterator[Release]:
    unique = uuid.uuid4().hex[:8]
    namespace = f"ca-{unique}"
    cluster.run("kubectl", "create", "namespace", namespace)
    cluster.run("kubectl", "label", "namespace", namespace, "ca-test=true")
    values = release_values(cluster, unique, image_tag, pod_model_dir)
    rel = Release(cluster, "ca", namespace, topic_names(unique), values)
    t0 = time.monotonic()
    try:
        rel.helm("install", rel.name, str(CHART), *values, "--wait", "--timeout", "6m")
    except AssertionError as exc:
        describe = cluster.run(
            "kubectl", "--namespace", namespace, "describe", "pods", check=False
        ).stdout
        cluster.run("kubectl", "delete", "namespace", namespace, "--wait=false", check=False)
        raise AssertionError(f"{exc}\n--- pods ---\n{describe[-6000:]}") from None
    print(f"helm install: {time.monotonic() - t0:.1f}s")
    try:
        yield rel
    finally:
        rel.helm("uninstall", rel.name, "--wait", "--timeout", "2m")
        cluster.run("kubectl", "delete", "namespace", namespace, "--wait=false", check=False)
