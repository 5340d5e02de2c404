#!/usr/bin/env bash
# Chart chores with the pinned tools (scripts/install-tools.sh):
#
#   scripts/helm.sh lint            helm lint --strict for every ci/*-values.yaml scenario
#   scripts/helm.sh render [FILE]   helm template with one scenario (default: ci/default-values.yaml)
#   scripts/helm.sh rules           promtool check + unit tests of the alert rules
#   scripts/helm.sh docs [--check]  write the chart README from values.yaml (helm-docs); --check: fail if stale
#   scripts/helm.sh check-version [BASE]
#                                   fail if the chart changed since BASE (git rev, default HEAD) but
#                                   its version did not go up; in CI, pass the target branch or HEAD^
#   scripts/helm.sh check           all of the above, plus `python -m dashboards --check`
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHART="$ROOT/helm/complaints-allocation"
BIN="$("$ROOT/scripts/install-tools.sh" --print-bin)"
HELM="${HELM:-$(command -v helm || echo "$BIN/helm")}"
[[ -x "$HELM" ]] || { echo "helm.sh: no helm; run scripts/install-tools.sh" >&2; exit 1; }

lint() {
  for values in "$CHART"/ci/*-values.yaml; do
    echo "helm lint --strict -f ci/$(basename "$values")"
    "$HELM" lint --strict --quiet "$CHART" -f "$values"
  done
}

render() {
  "$HELM" template complaints-allocation "$CHART" -f "${1:-$CHART/ci/default-values.yaml}"
}

rules() {
  promtool check rules "$CHART/rules/alerts.yaml"
  promtool test rules "$CHART/rules/tests/alerts_test.yaml"
}

chart_version() {  # chart_version [REV]: version in Chart.yaml at REV, or in the work tree
  local text
  if [[ -n "${1:-}" ]]; then
    text="$(git -C "$ROOT" show "$1:helm/complaints-allocation/Chart.yaml" 2>/dev/null)" || return 0
  else
    text="$(cat "$CHART/Chart.yaml")"
  fi
  sed -n 's/^version: *//p' <<<"$text"
}

check_version() {
  local base="${1:-HEAD}" old new
  git -C "$ROOT" rev-parse --verify --quiet "$base^{commit}" >/dev/null \
    || { echo "check-version: no git revision $base; nothing to compare"; return 0; }
  if git -C "$ROOT" diff --quiet "$base" -- helm/complaints-allocation \
     && [[ -z "$(git -C "$ROOT" ls-files --others --exclude-standard -- helm/complaints-allocation)" ]]; then
    echo "check-version: chart unchanged since $base"
    return 0
  fi
  old="$(chart_version "$base")"
  new="$(chart_version)"
  if [[ -z "$old" ]]; then
    echo "check-version: chart is new since $base (version $new)"
    return 0
  fi
  # sort -V orders semver well enough for X.Y.Z; the newest must be the work tree's, and differ.
  if [[ "$old" == "$new" || "$(printf '%s\n%s\n' "$old" "$new" | sort -V | tail -1)" != "$new" ]]; then
    echo "check-version: the chart changed since $base but its version did not go up ($old -> $new):" >&2
    echo "bump 'version' in helm/complaints-allocation/Chart.yaml" >&2
    return 1
  fi
  echo "check-version: $old -> $new"
}

# docs [--check]: the chart's README from values.yaml (helm-docs); --check fails when the README is stale.
docs() {
  if [[ "${1:-}" == --check ]]; then
    diff -u "$CHART/README.md" <(cd "$CHART" && helm-docs --dry-run --log-level warning) \
      || { echo "docs: $CHART/README.md is out of date: run scripts/helm.sh docs" >&2; return 1; }
    echo "docs: the chart README is up to date"
  else
    (cd "$CHART" && helm-docs --log-level warning)
  fi
}

case "${1:-check}" in
  lint) lint ;;
  docs) docs "${2:-}" ;;
  render) render "${2:-}" ;;
  rules) rules ;;
  check-version) check_version "${2:-}" ;;
  check)
    (cd "$ROOT" && python -m dashboards --check)
    lint
    docs --check
    rules
    check_version "${2:-}"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
