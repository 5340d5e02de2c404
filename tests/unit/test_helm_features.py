"""What the chart renders for each feature: the consumer, autoscaling, opt-in objects, secret
wiring, the hook and trainer Jobs, images and monitoring. Helpers and the skip without helm are in
test_helm_chart.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_helm_chart import (
    CHART,
    POD_KINDS,
    SCENARIOS,
    env_of,
    find,
    kinds,
    pod_spec,
    render,
    render_error,
    settings_map,
)
from tests.unit.test_helm_chart import pytestmark as pytestmark  # the same skip without helm

# --- the consumer ---------------------------------------------------------------------------------


def test_consumer_defaults() -> None:
    docs = render("default-values.yaml")
    dep = find(docs, "Deployment", "-consumer")
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    assert dep["spec"]["replicas"] == 2
    assert c["args"] == ["consume"]
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert c["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Sized from measurements (issue 21): peak RSS 162 MiB serving the int8 default.
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "384Mi"}
    env = env_of(c)
    # onnxruntime threads follow the CPU limit through the downward API.
    assert env["ALLOCATOR_ORT_THREADS"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "consumer",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    assert env["ALLOCATOR_DRAIN_TIMEOUT_S"]["value"] == "8"
    config = settings_map(docs)
    assert c["envFrom"] == [{"configMapRef": {"name": "rel-complaints-allocation"}}]
    assert config["ALLOCATOR_CREATE_TOPICS"] == "false", (
        "the topics Job creates topics, not the pods"
    )
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert config["ALLOCATOR_MODEL_CACHE_DIR"].startswith(tuple(mounts - {"/tmp"}))
    cache_volume = next(v for v in spec["volumes"] if v["name"] == "cache")
    assert cache_volume["emptyDir"]["sizeLimit"] == "2Gi"


def test_replicas_are_bounded_by_partitions() -> None:
    assert "idle" in render_error("consumer.replicas=7")
    assert "idle" in render_error("autoscaling.keda.enabled=true", "autoscaling.keda.maxReplicas=7")
    assert "enable one" in render_error(
        "autoscaling.keda.enabled=true", "autoscaling.hpa.enabled=true"
    )
    assert "drainTimeoutSeconds" in render_error("consumer.terminationGracePeriodSeconds=10")


def test_autoscaled_consumer_leaves_replicas_to_the_autoscaler() -> None:
    keda = render("full-values.yaml")
    assert "replicas" not in find(keda, "Deployment", "-consumer")["spec"]
    scaled = find(keda, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == find(keda, "Deployment", "-consumer")["metadata"]["name"]
    )
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "complaints-allocation-prod"
    assert trigger["metadata"]["topic"] == "complaints"
    assert all(isinstance(v, str) for v in trigger["metadata"].values()), (
        "KEDA metadata values are strings"
    )
    hpa = find(render("hpa-values.yaml"), "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "allocator_consumer_lag_messages"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1000"}


# --- opt-in objects -------------------------------------------------------------------------------

OPT_IN = {
    "ScaledObject",
    "TriggerAuthentication",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
    "PrometheusRule",
}


def test_opt_in_objects_are_absent_by_default() -> None:
    docs = render("default-values.yaml")
    assert not kinds(docs) & OPT_IN
    assert not [d for d in docs if "grafana_dashboard" in d["metadata"]["labels"]]
    # On by default (issue 21): PDBs, ingress NetworkPolicies and the `helm test` pod.
    assert kinds(docs) == {
        "ServiceAccount", "Secret", "ConfigMap", "Service", "Deployment", "CronJob", "Job",
        "PodDisruptionBudget", "NetworkPolicy", "Pod",
    }  # fmt: skip


def test_full_scenario_renders_every_feature() -> None:
    docs = render("full-values.yaml")
    assert kinds(docs) >= OPT_IN - {"TriggerAuthentication", "HorizontalPodAutoscaler"} | {
        "PodDisruptionBudget"
    }
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert sorted(d["metadata"]["name"] for d in pdbs) == ["triage-consumer", "triage-explainer"]
    policy = find(docs, "NetworkPolicy", "triage")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    metric_services = [
        d
        for d in docs
        if d["kind"] == "Service" and any(p["name"] == "metrics" for p in d["spec"]["ports"])
    ]
    assert len(metric_services) == 3, "consumer, promoter and explainer are all scraped"
    for svc in metric_services:
        assert (
            monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        )


def test_minimal_scenario_is_the_consumer_alone() -> None:
    docs = render("minimal-values.yaml")
    assert [d["metadata"]["name"] for d in docs if d["kind"] in POD_KINDS] == [
        "rel-complaints-allocation-consumer"
    ]
    assert "ServiceAccount" not in kinds(docs)
    assert (
        pod_spec(find(docs, "Deployment", "-consumer"))["serviceAccountName"]
        == "complaints-allocation"
    )


# --- secrets --------------------------------------------------------------------------------------


def test_sasl_tls_wiring_uses_the_existing_secret() -> None:
    docs = render("sasl-tls-values.yaml")
    assert not [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == "rel-complaints-allocation"
    ]
    config = settings_map(docs)
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["REDIS_URL"].startswith("rediss://")
    for doc in docs:
        if doc["kind"] not in POD_KINDS:
            continue
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        # Secrets arrive as files in ALLOCATOR_SECRETS_DIR, only the keys this process needs.
        keys = {i["key"] for i in volumes["secrets"]["secret"]["items"]}
        assert "KAFKA_SASL_PASSWORD" in keys
        assert mounts["secrets"] == config["ALLOCATOR_SECRETS_DIR"]
        if doc["kind"] != "Job":  # the topics Job talks to Kafka only
            assert volumes["secrets"]["secret"]["secretName"] == "complaints-allocation-credentials"
            assert "REDIS_PASSWORD" in keys
        assert ("ALLOCATOR_EXPLAINER_TOKEN" in keys) == doc["metadata"]["name"].endswith(
            "-explainer"
        )
        assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-client-tls"
        for var in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
            assert config[var].startswith(mounts["kafka-tls"] + "/")
        assert config["REDIS_SSL_CA_CERTS"].startswith(mounts["redis-tls"] + "/")
    auth = find(docs, "TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"] == ("complaints-allocation-credentials", "KAFKA_SASL_PASSWORD")
    assert refs["ca"] == ("kafka-client-tls", "ca.crt")
    keda_secret = find(docs, "Secret", "-keda")
    assert keda_secret["stringData"] == {
        "sasl": "scram_sha512",
        "username": "complaints-allocation",
        "tls": "enable",
    }


def test_the_circuit_breaker_is_configured_from_values() -> None:
    def breaker_env(*sets: str) -> dict[str, str]:
        deploy = find(render("default-values.yaml", sets=sets), "Deployment", "-consumer")
        env = env_of(pod_spec(deploy)["containers"][0])
        return {k: v["value"] for k, v in env.items() if k.startswith("ALLOCATOR_BREAKER_")}

    assert breaker_env() == {
        "ALLOCATOR_BREAKER_FAILURE_RATIO": "0.5",
        "ALLOCATOR_BREAKER_MIN_RECORDS": "10",
        "ALLOCATOR_BREAKER_WINDOW": "200",
        "ALLOCATOR_BREAKER_COOLDOWN_S": "300",
    }
    changed = breaker_env("consumer.circuitBreaker.minRecords=25")
    assert changed["ALLOCATOR_BREAKER_MIN_RECORDS"] == "25"
    assert "failureRatio" in render_error("consumer.circuitBreaker.failureRatio=2")


def test_chart_secret_holds_only_what_is_configured() -> None:
    data = find(render("full-values.yaml"), "Secret", "triage")["data"]
    assert set(data) == {"REDIS_PASSWORD", "ALLOCATOR_EXPLAINER_TOKEN", "WANDB_API_KEY", "HF_TOKEN"}
    data = find(render("default-values.yaml"), "Secret", "complaints-allocation")["data"]
    assert set(data) == {"ALLOCATOR_EXPLAINER_TOKEN"}, "a token is generated when none is given"
    assert "password" in render_error("kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=u")
    assert "existingSecret" in render_error("kafka.tls.enabled=true")


def test_env_names_are_known_settings() -> None:
    """Every ALLOCATOR_/KAFKA_/REDIS_ variable the chart sets is a field of consumer/settings.py."""
    settings = pytest.importorskip("consumer.settings")
    known = set()
    for cls in (settings.ConsumerSettings, settings.PromoterSettings, settings.ExplainerSettings):
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            known |= {a.upper() for a in alias.choices} if alias else {f"ALLOCATOR_{name.upper()}"}
    known.add("ALLOCATOR_SECRETS_DIR")  # read by settings.load() itself
    for scenario in SCENARIOS:
        docs = render(scenario)
        names = set(settings_map(docs))
        for doc in docs:
            if doc["kind"] in POD_KINDS:
                for c in pod_spec(doc)["containers"]:
                    names |= set(env_of(c))
        unknown = {n for n in names if n.startswith(("ALLOCATOR_", "KAFKA_", "REDIS_"))} - known
        assert not unknown, f"{scenario}: settings do not know {sorted(unknown)}"


# --- jobs -----------------------------------------------------------------------------------------


def test_topics_job_is_a_hook_that_needs_nothing_from_the_release() -> None:
    docs = render("default-values.yaml")
    job = find(docs, "Job", "-topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = pod_spec(job)
    (c,) = spec["containers"]
    assert c["args"] == ["topics", "create"]
    assert "envFrom" not in c, "the ConfigMap does not exist yet when a pre-install hook runs"
    assert "serviceAccountName" not in spec, "nor does the chart's ServiceAccount"
    assert env_of(c)["ALLOCATOR_TOPIC_PARTITIONS"]["value"] == "6"
    sasl = render(
        "default-values.yaml",
        sets=("kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=u", "kafka.sasl.password=p"),
    )
    hook_secret = find(sasl, "Secret", "-topics")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    volumes = {v["name"]: v for v in pod_spec(find(sasl, "Job", "-topics"))["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == hook_secret["metadata"]["name"]


def test_trainer_is_a_suspended_cronjob_template() -> None:
    cron = find(render("full-values.yaml"), "CronJob", "-trainer")
    assert cron["spec"]["suspend"] is True
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    spec = pod_spec(cron)
    (c,) = spec["containers"]
    assert c["image"].startswith("registry.example.com/complaints-allocation/trainer:")
    assert c["command"] == ["python", "-m", "trainer", "train"]
    env = env_of(c)
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "triage",
        "key": "WANDB_API_KEY",
        "optional": False,
    }
    assert env["WANDB_MODE"]["value"] == "online"
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_trainer_pushes_and_registers_only_with_a_hub_repo() -> None:
    """The package stays in the Job's pod: consumers can fetch only a pushed, pinned hub ref."""

    def trainer_args(*values: str, sets: tuple[str, ...] = ()) -> list[str] | None:
        (c,) = pod_spec(find(render(*values, sets=sets), "CronJob", "-trainer"))["containers"]
        return c.get("args")

    recipe = ["--config", "default"]  # always first: the published recipe, as `make train` runs it
    assert trainer_args("default-values.yaml") == recipe
    assert trainer_args("default-values.yaml", sets=("trainer.args={--resume}",)) == [
        *recipe,
        "--resume",
    ]
    pushed = trainer_args(
        "default-values.yaml", sets=("trainer.pushToHub.repo=bank/complaints-minilm",)
    )
    assert pushed == [*recipe, "--push-to-hub", "bank/complaints-minilm", "--register"]
    full = trainer_args("full-values.yaml")
    assert full == [
        *recipe,
        "--data",
        "/data/complaints.csv.gz",
        "--push-to-hub",
        "bank/complaints-minilm",
        "--register",
    ]
    assert "pushToHub" in render_error("trainer.pushToHub.repo=no-owner")
    # complaint text goes to W&B only when an operator says the server is the bank's own
    assert "--wandb_upload_data" not in (full or [])
    assert trainer_args("default-values.yaml", sets=("trainer.wandb.uploadData=true",)) == [
        *recipe,
        "--wandb_upload_data",
        "true",
    ]


def test_images() -> None:
    docs = render("full-values.yaml")
    images = {
        d["metadata"]["name"]: pod_spec(d)["containers"][0]["image"]
        for d in docs
        if d["kind"] in POD_KINDS
    }
    digest = "registry.example.com/complaints-allocation/consumer@sha256:" + "0" * 64
    assert (
        images["triage-consumer"] == images["triage-promoter"] == images["triage-topics"] == digest
    )
    assert (
        images["triage-explainer"] == "registry.example.com/complaints-allocation/explainer:0.1.0"
    )


# --- monitoring -----------------------------------------------------------------------------------


def test_prometheus_rule_is_the_rules_file_with_overrides() -> None:
    rule = find(render("full-values.yaml"), "PrometheusRule")
    source = yaml.safe_load((CHART / "rules" / "alerts.yaml").read_text())
    (group, extra) = rule["spec"]["groups"]
    expected = [
        r["alert"]
        for r in source["groups"][0]["rules"]
        if r["alert"] != "AllocatorEndToEndLatencyHigh"
    ]
    assert [r["alert"] for r in group["rules"]] == expected
    by_name = {r["alert"]: r for r in group["rules"]}
    assert by_name["AllocatorLiveAccuracyBelowTarget"]["for"] == "2h"
    assert by_name["AllocatorStoreDown"]["annotations"]["runbook_url"].endswith(
        "#allocatorstoredown"
    )
    assert extra["rules"][0]["alert"] == "AllocatorCanaryRunning"


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (apt-get install prometheus)")
    rule = find(render("full-values.yaml"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmaps_carry_the_generated_json() -> None:
    docs = render("full-values.yaml")
    maps = [d for d in docs if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) >= 2
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Complaints allocation"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())


def test_keda_scales_in_through_behavior_and_falls_back_to_fixed_replicas() -> None:
    docs = render("default-values.yaml", sets=("autoscaling.keda.enabled=true",))
    scaled = find(docs, "ScaledObject")["spec"]
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    assert scaled["fallback"] == {"failureThreshold": 3, "replicas": 2}
    assert (
        "fallback"
        not in find(
            render(
                "default-values.yaml",
                sets=("autoscaling.keda.enabled=true", "autoscaling.keda.fallback.replicas=0"),
            ),
            "ScaledObject",
        )["spec"]
    )
    assert "fallback.replicas (7) > maxReplicas (6)" in render_error(
        "autoscaling.keda.enabled=true", "autoscaling.keda.fallback.replicas=7"
    )


def test_an_existing_secret_is_read_under_its_own_key_names() -> None:
    sets = (
        "secrets.existingSecret=bank-creds",
        "secrets.keys.KAFKA_SASL_PASSWORD=password",
        "secrets.keys.ALLOCATOR_EXPLAINER_TOKEN=explainer-token",
        "kafka.sasl.mechanism=SCRAM-SHA-512",
        "kafka.sasl.username=triage",
    )
    docs = render("default-values.yaml", sets=sets)
    assert not [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == "rel-complaints-allocation"
    ]
    for component, expected in (
        ("consumer", {"password": "KAFKA_SASL_PASSWORD"}),
        (
            "explainer",
            {"password": "KAFKA_SASL_PASSWORD", "explainer-token": "ALLOCATOR_EXPLAINER_TOKEN"},
        ),
    ):
        volumes = find(docs, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        secret = next(v["secret"] for v in volumes if v["name"] == "secrets")
        assert secret["secretName"] == "bank-creds"
        assert {i["key"]: i["path"] for i in secret["items"]} == expected, component
    # Keys not named keep their own name; the chart's own Secret always uses the canonical names.
    sasl = ("kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=u", "kafka.sasl.password=p")
    own = render("default-values.yaml", sets=(*sasl, "secrets.keys.KAFKA_SASL_PASSWORD=password"))
    items = next(
        v
        for v in find(own, "Deployment", "consumer")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )
    assert items["secret"]["items"] == [
        {"key": "KAFKA_SASL_PASSWORD", "path": "KAFKA_SASL_PASSWORD"}
    ]


def test_the_retraining_job_runs_the_published_recipe() -> None:
    cron = find(render("default-values.yaml"), "CronJob")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "trainer", "train"]
    assert container["args"][:2] == ["--config", "default"]
