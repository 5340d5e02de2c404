#!/usr/bin/env bash
# Install the pinned Kubernetes tools the chart tests need into a cache dir.
#
# Prebuilt binaries cannot be downloaded on our machines, so helm and kustomize are
# built from source with `go install` through the Go module proxy. Each tool is
# skipped when the pinned version is already in the cache, so this is cheap to call
# from CI on every run (a cold build takes a few minutes; see docs/operations.md).
#
# kubeconform validates every rendered manifest offline against the schemas the PyPI package
# kubernetes-validate ships (the `dev` extra) plus CRD schemas made from the KEDA and prometheus-operator
# Go modules (scripts/validate_manifests.py). helm-docs writes the chart's README from values.yaml.
#
# Usage: scripts/install-tools.sh            # installs into $TOOLS_BIN
#        export PATH="$(scripts/install-tools.sh --print-bin):$PATH"
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# v5.8.3 needs go >= 1.27; our machines have go 1.26.
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.6.7}"
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-v1.14.2}"
TOOLS_BIN="${TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/complaints-allocation/bin}"

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$TOOLS_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "install-tools: the Go toolchain is required (go install)" >&2; exit 1; }
mkdir -p "$TOOLS_BIN"

# build_tool NAME VERSION MODULE_PATH [LDFLAGS]: builds MODULE_PATH@VERSION as $TOOLS_BIN/NAME-VERSION
# and points $TOOLS_BIN/NAME at it, so a version bump rebuilds and an old binary never lingers.
build_tool() {
  local name="$1" version="$2" module="$3" ldflags="${4:-}"
  local target="$TOOLS_BIN/$name-$version"
  if [[ -x "$target" ]]; then
    echo "install-tools: $name $version already in $TOOLS_BIN"
  else
    local tmp start
    tmp="$(mktemp -d)"
    start=$SECONDS
    echo "install-tools: building $name $version (go install $module@$version)..."
    # CGO off: static binaries, no C toolchain needed; -trimpath for reproducible builds.
    CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w $ldflags" "$module@$version"
    mv "$tmp/$name" "$target"
    rmdir "$tmp"
    echo "install-tools: built $name $version in $((SECONDS - start))s"
  fi
  ln -sf "$name-$version" "$TOOLS_BIN/$name"
}

# The same -X flags as helm's own Makefile: without them `helm version` says "v3.NN" and
# `helm template` assumes Kubernetes 1.20 (our tests pass --kube-version anyway). 1.36 is the
# Kubernetes of the client-go that helm v3.21.4 builds with.
HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in chartutil lint/rules; do
  HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=36"
done
build_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$HELM_LDFLAGS"
build_tool kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5
build_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
build_tool helm-docs "$HELM_DOCS_VERSION" github.com/norwoodj/helm-docs/cmd/helm-docs

"$TOOLS_BIN/helm" version --short
"$TOOLS_BIN/kustomize" version
