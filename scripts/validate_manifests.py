"""Validate every manifest users can install: each chart scenario
(helm/complaints-allocation/ci/*-values.yaml) and each kustomize build under k8s/.

1. **kubeconform -strict**, offline. Core kinds are checked against the schemas that the PyPI
   package kubernetes-validate ships. CRD kinds (KEDA's ScaledObject and TriggerAuthentication,
   prometheus-operator's ServiceMonitor and PrometheusRule) are checked against JSON schemas made
   here from the CRDs those projects publish in their Go modules (fetched with ``go mod download``,
   cached), closed to unknown fields like the core ones. No kind may go unchecked
   (``-ignore-missing-schemas`` is never passed).
2. **Server-side dry run** against a real kube-apiserver, when ``--kubeconfig`` is given (tests/k8s
   passes the test cluster's). The CRDs are applied first, so the apiserver checks the custom
   resources too.

Usage: python scripts/validate_manifests.py [--kubeconfig FILE] [--kube-version 1.34.0] [FILE ...]
Prints one line per manifest set and exits non-zero on the first set that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "complaints-allocation"
CACHE = Path(os.environ.get("CA_CACHE_DIR", Path.home() / ".cache" / "complaints-allocation"))
# The CRDs of the versions whose API the chart writes against (go 1.26 can download these; newer
# KEDA needs 1.27).
CRD_MODULES = {
    "github.com/kedacore/keda/v2@v2.20.2": [
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    ],
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": [
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ],
}
KUSTOMIZE_DIRS = ["k8s/base", "k8s/jobs", "k8s/overlays/production"]


def run(*cmd: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        failed = f"{' '.join(cmd[:4])} ... failed ({out.returncode})"
        raise SystemExit(f"{failed}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def crd_files() -> list[Path]:
    """The CRD files, copied out of their Go modules into the cache once."""
    out_dir = CACHE / "crds"
    files = []
    for module, paths in CRD_MODULES.items():
        wanted = [out_dir / module.replace("/", "_") / Path(p).name for p in paths]
        if not all(f.exists() for f in wanted):
            info = json.loads(
                run("go", "mod", "download", "-json", module, env={"GOFLAGS": "-mod=mod"})
            )
            if not info.get("Dir"):
                raise SystemExit(f"go mod download {module}: {info.get('Error')}")
            for p, dst in zip(paths, wanted, strict=True):
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text((Path(info["Dir"]) / p).read_text())
        files += wanted
    return files


def _close(schema: Any) -> Any:
    """kubeconform -strict's rule for CRDs, as its openapi2jsonschema does: objects with properties
    refuse unknown ones, unless the schema keeps them (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema = {**schema, "additionalProperties": False}
        return {k: _close(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_close(v) for v in schema]
    return schema


def crd_schemas(crds: list[Path], out: Path) -> Path:
    """JSON schemas named as kubeconform's CRD location template below expects:
    <group>/<kind>_<version>.json."""
    for f in crds:
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            schema = _close(version["schema"]["openAPIV3Schema"])
            # apiVersion/kind/metadata are checked by kubeconform itself; a CRD schema need not list
            # them.
            schema.setdefault("properties", {}).update(
                {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                }
            )
            dst = out / group / f"{kind}_{version['name']}.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(schema))
    return out


def manifest_sets(kube_version: str) -> dict[str, str]:
    """{name: multi-document YAML} for every chart scenario and kustomize build."""
    sets = {}
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[f"chart {values.name}"] = run(
            "helm", "template", "rel", str(CHART), "-f", str(values),
            "--kube-version", kube_version,
            "--namespace", "validate",
        )  # fmt: skip
    for d in KUSTOMIZE_DIRS:
        sets[f"kustomize {d}"] = run("kustomize", "build", str(ROOT / d))
    return sets


def core_schemas(kube_version: str) -> Path:
    """kubernetes-validate's strict schemas for this version, made loadable from files: each one's
    ``$id`` (``https://kubernetes.io/api/...``, which its ``$ref``s would resolve against) is
    dropped and the ``/api/_definitions.json`` refs, which kubernetes-validate's own loader maps,
    become file-relative."""
    import kubernetes_validate

    name = f"v{kube_version}-local-strict"
    src = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / name
    if not src.is_dir():
        raise SystemExit(
            f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
            f"{kube_version}"
        )
    out = CACHE / "schemas" / f"kubernetes-validate-{kubernetes_validate.__version__}-v2"
    if not (out / name / ".done").exists():
        (out / name).mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.json"):
            schema = json.loads(
                f.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
            )
            schema.pop("$id", None)
            (out / name / f.name).write_text(json.dumps(schema))
        (out / name / ".done").touch()
    return out


def kubeconform(docs: str, kube_version: str, crd_dir: Path) -> str:
    core = core_schemas(kube_version)
    return run(
        "kubeconform", "-strict", "-summary", "-kubernetes-version", kube_version,
        "-schema-location",
        f"{core}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/"
        "{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location",
        f"{crd_dir}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
        "-",
        stdin=docs,
    ).strip()  # fmt: skip


def install_crds(kubeconfig: str, crds: list[Path]) -> None:
    """Apply the CRDs once, so the apiserver checks the custom resources of every set."""
    base = [os.environ.get("KUBECTL", "kubectl"), "--kubeconfig", kubeconfig]
    for f in crds:
        run(*base, "apply", "--server-side", "--force-conflicts", "-f", str(f))
        crd_name = yaml.safe_load(f.read_text())["metadata"]["name"]
        run(*base, "wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s")


def dry_run(docs: str, kubeconfig: str) -> str:
    base = [os.environ.get("KUBECTL", "kubectl"), "--kubeconfig", kubeconfig]
    objs = [d for d in yaml.safe_load_all(docs) if d]
    for d in objs:
        d.setdefault("metadata", {}).setdefault("namespace", "validate")
    # A dry run of a namespaced object needs its namespace to exist for real.
    for ns in sorted({d["metadata"]["namespace"] for d in objs}):
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ca-test": "true"}},
        }
        run(*base, "apply", "-f", "-", stdin=yaml.safe_dump(namespace))
    out = run(*base, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(objs))
    accepted = len(out.splitlines())
    return f"{accepted} of {len(objs)} objects accepted by the apiserver (server-side dry run)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", help="also run a server-side dry run against this cluster")
    ap.add_argument("--kube-version", default="1.34.0")
    ap.add_argument(
        "files", nargs="*", help="validate these manifest files instead of the chart and k8s/"
    )
    args = ap.parse_args()
    crds = crd_files()
    with tempfile.TemporaryDirectory() as tmp:
        crd_dir = crd_schemas(crds, Path(tmp))
        sets = {f: Path(f).read_text() for f in args.files} or manifest_sets(args.kube_version)
        if args.kubeconfig:
            install_crds(args.kubeconfig, crds)
        for name, docs in sets.items():
            line = kubeconform(docs, args.kube_version, crd_dir)
            if args.kubeconfig:
                line += "; " + dry_run(docs, args.kubeconfig)
            print(f"{name}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
