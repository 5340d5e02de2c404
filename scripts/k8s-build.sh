#!/usr/bin/env bash
# Build the Kubernetes binaries that scripts/k8s.sh runs, from the official k8s.io/kubernetes Go module,
# once per version, into a cache dir (like the Kafka jars): a second call with the same version does nothing.
#
# `go install k8s.io/kubernetes/cmd/...@vX.Y.Z` refuses the module because its go.mod has replace
# directives (the ./staging modules). The module zip leaves staging/ out anyway (nested modules), so we:
#   1. `go mod download` the module and copy it out of the read-only module cache;
#   2. drop each ./staging replace and require that module's published release (v0.Y.Z) instead;
#   3. build with GOWORK=off GOFLAGS=-mod=mod, stamping the version the way Kubernetes' own build does
#      (without it the binaries call themselves v0.0.0 and the apiserver refuses its own compatibility version).
#
# Which release: this project's machines mount cgroup v1. Kubernetes 1.35 made the kubelet refuse cgroup v1
# by default (KEP-5573) and 1.36 drops containerd 1.x, which is what Debian 12 ships; 1.34 is the newest
# release whose kubelet runs on cgroup v1 and containerd 1.6 as they are (docs/kubernetes.md).
#
# Usage: scripts/k8s-build.sh              # build what is missing, print the bin dir
#        scripts/k8s-build.sh --print-bin  # only print it
# Env:   K8S_VERSION (v1.34.4), CA_CACHE_DIR, K8S_BUILD_NICE (10): the build yields CPU to the tests.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CACHE_DIR="${CA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/complaints-allocation}"
BIN="$CACHE_DIR/kubernetes-$K8S_VERSION/bin"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$BIN"
  exit 0
fi

say() { echo "k8s-build: $*" >&2; }

missing=()
for c in "${COMPONENTS[@]}"; do
  [[ -x "$BIN/$c" ]] || missing+=("$c")
done
if (( ${#missing[@]} == 0 )); then
  say "Kubernetes $K8S_VERSION already built in $BIN"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { say "the Go toolchain is required"; exit 1; }
start=$SECONDS
src="$CACHE_DIR/kubernetes-$K8S_VERSION/src"
if [[ ! -f "$src/.prepared" ]]; then
  say "downloading k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  dir="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { say "go mod download gave no directory"; exit 1; }
  rm -rf "$src"
  mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  minor="${K8S_VERSION#v1.}"   # 34.4 -> staging modules are v0.34.4
  edits=()
  while read -r mod; do
    edits+=("-dropreplace=$mod" "-require=$mod@v0.$minor")
  done < <(cd "$src" && go mod edit -json | "${PYTHON:-python3}" -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])
')
  (( ${#edits[@]} > 0 )) || { say "no ./staging replaces found: has the module layout changed?"; exit 1; }
  (cd "$src" && go mod edit "${edits[@]}")
  touch "$src/.prepared"
fi

major="${K8S_VERSION#v}"; major="${major%%.*}"
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$BIN"
tmp="$(mktemp -d "$BIN/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
pkgs=()
for c in "${missing[@]}"; do pkgs+=("./cmd/$c"); done
say "building ${missing[*]} (this takes a while on 2 cores; cached afterwards)"
# CGO off: static binaries. The kubelet needs no cgo for containerd over CRI.
(cd "$src" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n "${K8S_BUILD_NICE:-10}" \
  go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
for c in "${missing[@]}"; do mv "$tmp/$c" "$BIN/$c"; done
say "built ${missing[*]} in $((SECONDS - start))s"
"$BIN/kubectl" version --client 2>/dev/null | head -1 >&2 || true
echo "$BIN"
